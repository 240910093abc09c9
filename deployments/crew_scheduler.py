"""The crew scheduler's contract over one deployment of the crew pipeline.

The crew scheduler is one schedule (settings.crew_schedule_name): `start` gives it an interval
of N minutes and resumes it (creating it the first time), `stop` pauses it, `run-now` starts a
flow run (creating it paused if it does not exist yet). Its state is read from Prefect.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from blocks.crew import resolve_crew_api
from deployments.errors import ScheduleExists, ScheduleNotFound
from deployments.service import ScheduleService
from deployments.spec import IntervalTiming, SchedulePatch, ScheduleSpec
from deployments.views import ScheduleView
from settings import Settings

PIPELINE = "crew"


@dataclass(frozen=True)
class CrewSchedulerState:
    """Whether the crew schedule runs, every how many minutes, and which crew API it calls."""

    is_running: bool
    interval_minutes: int | float
    api_url: str | None


class CrewScheduler:
    """Start, stop and run the crew schedule, as the crew scheduler's clients expect."""

    def __init__(self, service: ScheduleService, settings: Settings):
        self.service = service
        self.settings = settings
        self.name = settings.crew_schedule_name

    async def status(self) -> CrewSchedulerState:
        return await self._state(await self._current())

    async def start(self, interval_minutes: int | None) -> CrewSchedulerState:
        """Run every `interval_minutes` (default: the current interval) from now on."""
        view = await self._current()
        minutes = interval_minutes or self._minutes(view)
        if view is None:
            view = await self._create(minutes, paused=False)
        else:
            await self.service.update(
                self.name, SchedulePatch(timing=IntervalTiming(every_minutes=minutes))
            )
            view = await self.service.resume(self.name)
        return await self._state(view)

    async def stop(self) -> CrewSchedulerState:
        """Pause the schedule (nothing to do when it does not exist)."""
        view = await self._current()
        if view is not None:
            view = await self.service.pause(self.name)
        return await self._state(view)

    async def run_now(self) -> uuid.UUID:
        """One flow run now; the schedule is created paused if it does not exist yet."""
        if await self._current() is None:
            await self._create(self._minutes(None), paused=True)
        return await self.service.run_now(self.name, {})

    async def _current(self) -> ScheduleView | None:
        try:
            view = await self.service.get(self.name)
        except ScheduleNotFound:
            return None
        if view.pipeline != PIPELINE:
            raise ScheduleExists(
                self.name, f"schedule {self.name!r} exists and is not a crew schedule"
            )
        return view

    async def _create(self, minutes: float, paused: bool) -> ScheduleView:
        spec = ScheduleSpec.model_validate(
            {
                "name": self.name,
                "pipeline": PIPELINE,
                "description": "The crew scheduler: each user's context and goal to the crew API",
                "timing": {"type": "interval", "every_minutes": minutes},
                "paused": paused,
            }
        )
        return await self.service.create(spec)

    def _minutes(self, view: ScheduleView | None) -> int | float:
        if view is not None and isinstance(view.timing, IntervalTiming):
            minutes = view.timing.period.total_seconds() / 60
            return int(minutes) if minutes == int(minutes) else minutes
        return self.settings.crew_scheduler_interval_minutes

    async def _state(self, view: ScheduleView | None) -> CrewSchedulerState:
        return CrewSchedulerState(
            is_running=view is not None and not view.paused,
            interval_minutes=self._minutes(view),
            api_url=await self._api_url(view),
        )

    async def _api_url(self, view: ScheduleView | None) -> str | None:
        block_name = view.parameters.get("crew_api") if view is not None else None
        try:
            return (await resolve_crew_api(block_name)).url
        except LookupError:
            return None
