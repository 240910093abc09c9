"""The FastAPI service beside Prefect's: schedules, runs, domain results and health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse
from prefect import get_client
from prefect.exceptions import PrefectHTTPStatusError
from sqlalchemy.engine import Engine

from api.deps import require_api_key
from api.routes import crew, demo, health, jobs, records, runs, schedules
from db.engine import get_engine
from deployments.errors import ScheduleExists, ScheduleNotFound, SpecError
from deployments.prefect_patches import install_client_fixes


def create_app(engine: Engine | None = None) -> FastAPI:
    """The API app; `engine` overrides the configured database (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_client_fixes()  # schedule checks cached, cron planned by Debian cron's rules
        app.state.engine = engine or get_engine()
        app.state.prefect_writes = asyncio.Semaphore(4)
        async with get_client() as client:
            app.state.prefect_client = client
            yield

    app = FastAPI(
        title="scheduled-pipelines",
        summary="Scheduled data pipelines and service jobs on Prefect 3.",
        lifespan=lifespan,
    )
    secured = [Depends(require_api_key)]
    app.include_router(health.router)
    app.include_router(demo.router)
    for router in (schedules.router, runs.router, records.router, jobs.router, crew.router):
        app.include_router(router, dependencies=secured)

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
