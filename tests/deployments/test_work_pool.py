"""Runs a stopped stack left Pending go back to Scheduled before its worker starts again."""

from __future__ import annotations

import asyncio

import pytest
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.states import Pending

from deployments.work_pool import HALF_SUBMITTED, hand_back_pending_runs

pytestmark = pytest.mark.e2e


def test_pending_runs_of_a_pool_without_worker_are_scheduled_again_at_their_time(
    prefect_api_url: str,
) -> None:
    async def scenario() -> None:
        async with get_client() as client:
            pool = "no-worker-half-submitted"
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            flow_id = await client.create_flow_from_name("half-submitted")
            deployment_id = await client.create_deployment(
                flow_id=flow_id, name="half-submitted", work_pool_name=pool
            )
            claimed = await client.create_flow_run_from_deployment(deployment_id)
            untouched = await client.create_flow_run_from_deployment(deployment_id)
            await client.set_flow_run_state(claimed.id, Pending(), force=True)

            assert await hand_back_pending_runs(client, pool) == 1
            run = await client.read_flow_run(claimed.id)
            assert run.state is not None and run.state.is_scheduled()
            assert run.state.message == HALF_SUBMITTED
            assert run.next_scheduled_start_time == claimed.expected_start_time
            other = await client.read_flow_run(untouched.id)
            assert other.state is not None and other.state.is_scheduled()
            assert await hand_back_pending_runs(client, pool) == 0

    asyncio.run(scenario())
