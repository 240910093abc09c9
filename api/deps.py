"""Typed dependencies: settings, database session, Prefect client, schedule service, auth."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prefect.client.orchestration import PrefectClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.security import MISSING_KEY, key_accepted
from deployments.crew_scheduler import CrewScheduler
from deployments.service import ScheduleService
from settings import Settings, get_settings

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_db_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


EngineDep = Annotated[Engine, Depends(get_db_engine)]


def get_session(engine: EngineDep) -> Iterator[Session]:
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_prefect_client(request: Request) -> PrefectClient:
    client: PrefectClient = request.app.state.prefect_client
    return client


PrefectClientDep = Annotated[PrefectClient, Depends(get_prefect_client)]


def get_schedule_service(
    request: Request, client: PrefectClientDep, engine: EngineDep, settings: SettingsDep
) -> ScheduleService:
    """Schedules of every pipeline."""
    return ScheduleService(
        client, engine, settings.work_pool_name, writes=request.app.state.prefect_writes
    )


ScheduleServiceDep = Annotated[ScheduleService, Depends(get_schedule_service)]


def _scoped_service(pipeline: str) -> Callable[..., ScheduleService]:
    """A dependency: the schedules of one pipeline only, called jobs (a compatible API's)."""

    def service(
        request: Request, client: PrefectClientDep, engine: EngineDep, settings: SettingsDep
    ) -> ScheduleService:
        return ScheduleService(
            client,
            engine,
            settings.work_pool_name,
            writes=request.app.state.prefect_writes,
            pipeline=pipeline,
            noun="job",
        )

    service.__doc__ = f"Jobs of the {pipeline} pipeline only."
    return service


get_job_service = _scoped_service("service_job")
JobServiceDep = Annotated[ScheduleService, Depends(get_job_service)]


def get_crew_scheduler(service: ScheduleServiceDep, settings: SettingsDep) -> CrewScheduler:
    """The crew scheduler's one schedule."""
    return CrewScheduler(service, settings)


CrewSchedulerDep = Annotated[CrewScheduler, Depends(get_crew_scheduler)]

_bearer = HTTPBearer(auto_error=False)


def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """With API keys configured, every route but /health needs `Authorization: Bearer <key>`.

    `api.security.Gate` refuses such requests before they reach a route; this check puts the
    bearer scheme in the OpenAPI description and holds for any route mounted without it."""
    keys = settings.api_key_list
    if not keys and not settings.workspace_key_map:
        return
    if not key_accepted(keys, credentials.credentials if credentials else ""):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=MISSING_KEY,
            headers={"WWW-Authenticate": "Bearer"},
        )


@dataclass(frozen=True)
class Access:
    """The workspaces a request may see and change: every one (None: an admin key, or no keys
    configured), or those its WORKSPACE_KEYS key is bound to."""

    workspaces: frozenset[str] | None

    def sees(self, workspace_id: str) -> bool:
        return self.workspaces is None or workspace_id in self.workspaces

    def require(self, workspace_id: str) -> None:
        """403 unless the request may act on `workspace_id` (a list or write naming it)."""
        if not self.sees(workspace_id):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"this key has no access to workspace {workspace_id!r}",
            )


def get_access(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Access:
    """Who the request is, for the workspace-scoped routes (the Gate let only known keys in)."""
    keys, bound = settings.api_key_list, settings.workspace_key_map
    if not keys and not bound:
        return Access(None)
    given = credentials.credentials if credentials else ""
    if key_accepted(keys, given):
        return Access(None)
    for key, workspaces in bound.items():
        if key_accepted([key], given):
            return Access(workspaces)
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=MISSING_KEY, headers={"WWW-Authenticate": "Bearer"}
    )


AccessDep = Annotated[Access, Depends(get_access)]


get_newsletter_service = _scoped_service("newsletter")
NewsletterServiceDep = Annotated[ScheduleService, Depends(get_newsletter_service)]
