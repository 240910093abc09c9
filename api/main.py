"""The FastAPI service beside Prefect's: schedules, runs, domain results and health."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse
from prefect import get_client
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from starlette.types import Scope

from api.access_log import AccessLog
from api.deadline import Deadline, unavailable
from api.deps import require_api_key
from api.docs import serve_docs
from api.errors import document_errors
from api.metrics import ApiMetrics
from api.routes import (
    crew,
    demo,
    health,
    jobs,
    monitor,
    newsletter_scheduler,
    newsletters,
    records,
    runs,
    schedules,
    workspaces,
)
from api.security import Gate
from db.engine import DatabaseMissing, get_engine
from deployments.errors import (
    IdempotencyConflict,
    RunConflict,
    ScheduleExists,
    ScheduleNotFound,
    SpecError,
)
from deployments.prefect_patches import install_client_fixes
from deployments.service import ScheduleService
from flows.http import describe_error
from settings import Settings, get_settings


def require_prefect_api() -> None:
    """Refuse to start without PREFECT_API_URL: Prefect's client would otherwise start a
    temporary server of its own in this process, with schedules nobody else sees."""
    if not PREFECT_API_URL.value():
        raise RuntimeError(
            "PREFECT_API_URL is not set: point our API at the Prefect server it works with "
            "(make run sets it; e.g. PREFECT_API_URL=http://127.0.0.1:4200/api)"
        )


def _settings(scope: Scope) -> Settings:
    """The settings the app's routes see (tests override them), for its middleware."""
    overrides = getattr(scope.get("app"), "dependency_overrides", {})
    settings: Settings = overrides.get(get_settings, get_settings)()
    return settings


def _keys(scope: Scope) -> list[str]:
    return _settings(scope).api_key_list


def _workspace_keys(scope: Scope) -> list[str]:
    return list(_settings(scope).workspace_key_map)


def _demo(scope: Scope) -> bool:
    return _settings(scope).demo_routes


async def _catch_up_late_runs(app: FastAPI) -> None:
    """Runs that went Late while our API was down get their catch-up policy (the automations
    that would have asked us fired meanwhile; deployments/catchup.py)."""
    service = ScheduleService(
        app.state.prefect_client,
        app.state.engine,
        get_settings().work_pool_name,
        app.state.prefect_writes,
    )
    try:
        ended = await service.catch_up_late_runs()
    except Exception as exc:  # Prefect not up yet: the automations cover what comes next
        logging.getLogger("api").warning("Late runs not caught up at start: %s", exc)
        return
    if ended:
        logging.getLogger("api").info("Caught up at start: %d late runs ended", ended)


def create_app(engine: Engine | None = None) -> FastAPI:
    """The API app; `engine` overrides the configured database (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_client_fixes()  # schedule checks cached, cron planned by Debian cron's rules
        logging.getLogger("api").setLevel(logging.INFO)  # our request lines (api/access_log.py)
        require_prefect_api()
        app.state.engine = engine or get_engine()
        app.state.metrics.count_items_of(app.state.engine)
        app.state.prefect_writes = asyncio.Semaphore(4)
        # Prefect calls fail fast enough for the request deadline (api/deadline.py).
        async with get_client(
            httpx_settings={"timeout": httpx.Timeout(10.0, connect=3.0)}
        ) as client:
            app.state.prefect_client = client
            catching_up = asyncio.create_task(_catch_up_late_runs(app))
            try:
                yield
            finally:
                catching_up.cancel()

    app = FastAPI(
        title="scheduled-pipelines",
        summary="Scheduled data pipelines and service jobs on Prefect 3.",
        lifespan=lifespan,
        docs_url=None,  # served by api/docs.py, without a CDN
        redoc_url=None,
    )
    serve_docs(app)
    app.state.metrics = ApiMetrics()
    app.add_middleware(Deadline, seconds=lambda scope: _settings(scope).request_deadline_seconds)
    app.add_middleware(Gate, keys=_keys, demo=_demo, workspace_keys=_workspace_keys)
    # Added last: outermost, so it logs (and counts) what the client got.
    app.add_middleware(AccessLog, observer=app.state.metrics)
    secured = [Depends(require_api_key)]
    app.include_router(health.router)
    if get_settings().demo_routes:  # DEMO_ROUTES: `make run`'s offline example, off otherwise
        app.include_router(demo.router)
    routers = (schedules.router, runs.router, records.router, jobs.router, crew.router)
    for router in (*routers, monitor.router):
        app.include_router(router, dependencies=secured)
    # Workspace-scoped: each route checks the caller's workspaces (api.deps.AccessDep).
    for router in (newsletter_scheduler.router, workspaces.router, newsletters.router):
        app.include_router(router)
    app.include_router(workspaces.unsubscribe_router)

    document_errors(app)

    @app.exception_handler(DatabaseMissing)
    async def _database_missing(_request: Request, exc: DatabaseMissing) -> JSONResponse:
        return unavailable(str(exc))

    @app.exception_handler(SpecError)
    async def _invalid_spec(_request: Request, exc: SpecError) -> JSONResponse:
        detail = [{**e, "loc": ["body", *e["loc"]]} for e in exc.errors]
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(ScheduleNotFound)
    async def _not_found(_request: Request, exc: ScheduleNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)

    @app.exception_handler(ScheduleExists)
    async def _exists(_request: Request, exc: ScheduleExists) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)

    @app.exception_handler(RunConflict)
    async def _run_conflict(_request: Request, exc: RunConflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)

    @app.exception_handler(IdempotencyConflict)
    async def _key_reused(_request: Request, exc: IdempotencyConflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)

    @app.exception_handler(httpx.TransportError)
    async def _prefect_unreachable(_request: Request, exc: httpx.TransportError) -> JSONResponse:
        return unavailable(f"Prefect API unreachable ({type(exc).__name__}); try again")

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.InterfaceError)
    async def _database_unavailable(_request: Request, exc: sa_exc.DBAPIError) -> JSONResponse:
        # The driver's first line only (describe_error): never the statement or its data.
        return unavailable(f"our database is unavailable: {describe_error(exc)}")

    @app.exception_handler(PrefectHTTPStatusError)
    async def _prefect_unavailable(_request: Request, exc: PrefectHTTPStatusError) -> JSONResponse:
        # Prefect answered with an error we did not expect: say so, and that it may pass.
        code = exc.response.status_code
        return JSONResponse(
            {"detail": f"Prefect API answered {code}; try again"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE
            if code >= 500
            else status.HTTP_502_BAD_GATEWAY,
            headers={"Retry-After": "5"},
        )

    return app


app = create_app()
