"""Parameters of the crew pipeline: where users and the crew API are, how hard to go."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from blocks.validators import check_block_name

BlockName = Annotated[str, AfterValidator(check_block_name)]
# One definition per parameter, shared by the flow's signature (what Prefect validates and shows
# in the UI) and CrewParameters (what a schedule is checked against when it is created).
Concurrency = Annotated[int, Field(ge=1, le=500, description="Crew API calls in flight at once")]
PageSize = Annotated[int, Field(ge=1, le=50_000, description="Users loaded per query")]
BatchSize = Annotated[int, Field(ge=1, le=10_000, description="Users per call/store task")]
Retries = Annotated[int, Field(ge=0, le=10, description="Retries of one user's call")]
Backoff = Annotated[float, Field(ge=0, le=600, description="First retry delay, doubled after")]
Timeout = Annotated[float, Field(gt=0, le=3600, description="Seconds one call may take")]
PerSecond = Annotated[
    float | None, Field(default=None, gt=0, description="Rate limit per crew API host")
]

CONCURRENCY = 20
PAGE_SIZE = 1_000
BATCH_SIZE = 500
RETRIES = 3
BACKOFF_SECONDS = 1.0
TIMEOUT_SECONDS = 120.0


class CrewParameters(BaseModel):
    """What a crew schedule may set; everything has a default."""

    model_config = ConfigDict(extra="forbid")

    crew_api: BlockName | None = Field(
        default=None, description="CrewApi block; default: the CREW_API_URL setting"
    )
    users: BlockName | None = Field(
        default=None, description="UserSource block; default: our own users table"
    )
    concurrency: Concurrency = CONCURRENCY
    page_size: PageSize = PAGE_SIZE
    batch_size: BatchSize = BATCH_SIZE
    retries: Retries = RETRIES
    backoff_seconds: Backoff = BACKOFF_SECONDS
    timeout_seconds: Timeout = TIMEOUT_SECONDS
    requests_per_second: PerSecond = None
