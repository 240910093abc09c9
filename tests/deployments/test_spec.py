"""The schedule spec on its own: what it accepts, normalises and refuses, naming the field.

Pure validation, no Prefect server, no API, no database: the whole module runs in about a
second after imports. The slow API test in tests/api/test_schedules_prefect.py proves that a
refused spec reaches nothing; these cover the cases themselves.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from deployments.spec import OnceTiming, SchedulePatch, ScheduleSpec, WeeklyTiming

# Fixtures of the conftests that start the Prefect server, a worker or a database.
SERVER_FIXTURES = frozenset(
    {"prefect_api_url", "work_pool", "worker", "api", "sqlite_engine", "postgres_engine"}
)


@pytest.fixture(autouse=True)
def _no_server(request: pytest.FixtureRequest) -> None:
    """Keep this module pure: a test here that asks for the server or a database fails."""
    used = SERVER_FIXTURES.intersection(request.fixturenames)
    assert not used, f"tests/deployments/test_spec.py must stay server-free; uses {sorted(used)}"


def spec(**changes: Any) -> dict[str, Any]:
    """A valid manual api_call spec with `changes` replacing its fields."""
    return {"name": "btc-price", "pipeline": "api_call", **changes}


def refusal(model: type[ScheduleSpec] | type[SchedulePatch], body: dict[str, Any]) -> list[tuple]:
    """The `loc` of each error `model` reports for `body` (failing if it accepts it)."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return [tuple(error["loc"]) for error in caught.value.errors()]


def soon(hours: float) -> datetime:
    """Now plus `hours` (negative: ago), aware, in UTC."""
    return datetime.now(UTC) + timedelta(hours=hours)


@pytest.mark.parametrize(
    ("timing", "loc"),
    [
        ({"type": "cron", "cron": "61 * * * *"}, ("timing", "cron", "cron")),
        ({"type": "cron", "cron": "0 9 * *"}, ("timing", "cron", "cron")),
        (
            {"type": "cron", "cron": "0 9 * * *", "timezone": "Mars/Olympus"},
            ("timing", "cron", "timezone"),
        ),
        ({"type": "interval", "every_seconds": 60, "every_minutes": 1}, ("timing", "interval")),
        ({"type": "interval"}, ("timing", "interval")),
        ({"type": "interval", "every_seconds": 0}, ("timing", "interval", "every_seconds")),
        ({"type": "interval", "every_seconds": -1}, ("timing", "interval", "every_seconds")),
        ({"type": "interval", "every_minutes": 0}, ("timing", "interval", "every_minutes")),
        ({"type": "interval", "every_minutes": -5}, ("timing", "interval", "every_minutes")),
        ({"type": "weekly", "days": [], "at": "07:00"}, ("timing", "weekly", "days")),
        ({"type": "weekly", "at": "07:00"}, ("timing", "weekly", "days")),
        ({"type": "weekly", "days": ["someday"], "at": "07:00"}, ("timing", "weekly", "days", 0)),
        ({"type": "daily", "at": "25:00"}, ("timing", "daily", "at")),
        ({"type": "daily", "at": "7:30"}, ("timing", "daily", "at")),
        ({"type": "daily", "at": "07:60"}, ("timing", "daily", "at")),
        ({"type": "rrule", "rrule": "FREQ=SOMETIMES"}, ("timing", "rrule", "rrule")),
        ({"type": "manual", "cron": "0 9 * * *"}, ("timing", "manual", "cron")),
        ({"type": "hourly"}, ("timing",)),
    ],
)
def test_a_bad_timing_is_refused_naming_its_field(timing: dict[str, Any], loc: tuple) -> None:
    assert refusal(ScheduleSpec, spec(timing=timing)) == [loc]


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        ({"name": "Not A Slug"}, ("name",)),
        ({"name": "-leading-dash"}, ("name",)),
        ({"name": "x" * 64}, ("name",)),
        ({"pipeline": "no_such_pipeline"}, ("pipeline",)),
        ({"colour": "blue"}, ("colour",)),
        ({"retries": 11}, ("retries",)),
        ({"retries": -1}, ("retries",)),
        ({"retry_delay_seconds": 86_401}, ("retry_delay_seconds",)),
        ({"concurrency_limit": 0}, ("concurrency_limit",)),
        ({"collision": "drop"}, ("collision",)),
        ({"tags": [f"t{i}" for i in range(21)]}, ("tags",)),
    ],
)
def test_a_bad_field_is_refused_naming_it(changes: dict[str, Any], loc: tuple) -> None:
    assert refusal(ScheduleSpec, spec(**changes)) == [loc]


def test_name_and_pipeline_are_required() -> None:
    assert sorted(refusal(ScheduleSpec, {})) == [("name",), ("pipeline",)]


@pytest.mark.parametrize(
    "timing",
    [
        {"type": "manual"},
        {"type": "cron", "cron": "*/10 * * * *", "timezone": "Europe/Paris"},
        {"type": "interval", "every_seconds": 90},
        {"type": "interval", "every_minutes": 0.5},
        {"type": "daily", "at": "00:00"},
        {"type": "daily", "at": "23:59"},
        {"type": "weekly", "days": ["mon", "fri"], "at": "06:15"},
        {"type": "rrule", "rrule": "FREQ=MONTHLY;BYDAY=MO;BYSETPOS=1;BYHOUR=9;BYMINUTE=0"},
        {"type": "once", "at": soon(1).isoformat()},
    ],
)
def test_every_kind_of_timing_is_accepted_when_valid(timing: dict[str, Any]) -> None:
    assert ScheduleSpec.model_validate(spec(timing=timing)).timing.type == timing["type"]


def test_cron_whitespace_is_normalised_and_the_timezone_defaults_to_utc() -> None:
    parsed = ScheduleSpec.model_validate(spec(timing={"type": "cron", "cron": " 0  9 * * 1 "}))
    assert parsed.timing.model_dump() == {"type": "cron", "cron": "0 9 * * 1", "timezone": "UTC"}


def test_interval_period_is_the_one_unit_given() -> None:
    parsed = ScheduleSpec.model_validate(spec(timing={"type": "interval", "every_minutes": 1.5}))
    assert parsed.timing.period == timedelta(seconds=90)  # type: ignore[union-attr]


def test_weekly_day_names_are_normalised_to_three_letters() -> None:
    timing = {"type": "weekly", "days": ["Monday", "THU", "sun"], "at": "07:30"}
    parsed = ScheduleSpec.model_validate(spec(timing=timing)).timing
    assert isinstance(parsed, WeeklyTiming)
    assert parsed.days == ["mon", "thu", "sun"]


def test_once_in_the_past_is_refused_when_aware() -> None:
    timing = {"type": "once", "at": soon(-1).isoformat()}
    assert refusal(ScheduleSpec, spec(timing=timing)) == [("timing", "once", "at")]


def test_once_naive_time_is_read_in_its_zone() -> None:
    # Half an hour ahead on UTC's wall clock: already past in Tokyo (UTC+9), still ahead in
    # Los Angeles (UTC-8 or -7), so the zone decides, not the machine's.
    naive = soon(0.5).replace(tzinfo=None).isoformat()
    tokyo = {"type": "once", "at": naive, "timezone": "Asia/Tokyo"}
    assert refusal(ScheduleSpec, spec(timing=tokyo)) == [("timing", "once", "at")]
    la = {"type": "once", "at": naive, "timezone": "America/Los_Angeles"}
    parsed = ScheduleSpec.model_validate(spec(timing=la)).timing
    assert isinstance(parsed, OnceTiming)
    assert parsed.when.utcoffset() in (timedelta(hours=-8), timedelta(hours=-7))
    assert parsed.when > datetime.now(UTC) + timedelta(hours=6)


def test_once_aware_time_keeps_its_own_offset_whatever_the_zone() -> None:
    at = soon(1).astimezone(UTC)
    timing = {"type": "once", "at": at.isoformat(), "timezone": "Asia/Tokyo"}
    parsed = ScheduleSpec.model_validate(spec(timing=timing)).timing
    assert isinstance(parsed, OnceTiming)
    assert parsed.when == at and parsed.when.utcoffset() == timedelta(0)


def test_patch_keeps_every_field_it_does_not_set() -> None:
    original = ScheduleSpec.model_validate(
        spec(
            description="BTC in USD",
            timing={"type": "daily", "at": "08:00", "timezone": "Europe/Paris"},
            retries=2,
            tags=["team:data"],
            paused=True,
        )
    )
    patch = SchedulePatch.model_validate({"timing": {"type": "cron", "cron": "*/10 * * * *"}})
    merged = ScheduleSpec.model_validate(patch.apply_to(original))
    assert merged.timing.model_dump() == {
        "type": "cron",
        "cron": "*/10 * * * *",
        "timezone": "UTC",
    }
    untouched = original.model_dump(exclude={"timing"})
    assert merged.model_dump(exclude={"timing"}) == untouched


def test_an_empty_patch_changes_nothing() -> None:
    original = ScheduleSpec.model_validate(spec(retries=3, tags=["a"]))
    assert SchedulePatch().apply_to(original) == original.model_dump(mode="json")


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"timing": {"type": "cron", "cron": "nope"}}, ("timing", "cron", "cron")),
        ({"retries": 11}, ("retries",)),
        ({"name": "renamed"}, ("name",)),
        ({"pipeline": "crew"}, ("pipeline",)),
    ],
)
def test_a_patch_is_refused_naming_the_field(body: dict[str, Any], loc: tuple) -> None:
    # A schedule's name and pipeline are fixed at creation: a patch may not carry them.
    assert refusal(SchedulePatch, body) == [loc]


# -- scheduling controls ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        ({"priority": "urgent"}, ("priority",)),
        ({"collision": "queue"}, ("collision",)),
        ({"jitter_seconds": 3601}, ("jitter_seconds",)),
        ({"timeout_seconds": 0}, ("timeout_seconds",)),
        ({"retry_backoff": "linear"}, ("retry_backoff",)),
        ({"catchup": {"policy": "some"}}, ("catchup", "policy")),
        ({"catchup": {"window_seconds": -1}}, ("catchup", "window_seconds")),
        ({"windows": {"allowed": []}}, ("windows", "allowed")),
        (
            {"windows": {"allowed": [{"from": "9:00", "to": "17:00"}]}},
            ("windows", "allowed", 0, "from"),
        ),
        ({"windows": {"allowed": [{"from": "09:00"}]}}, ("windows", "allowed", 0, "to")),
        (
            {"windows": {"allowed": [{"from": "09:00", "to": "17:00", "timezone": "Mars/Base"}]}},
            ("windows", "allowed", 0, "timezone"),
        ),
        (
            {"windows": {"allowed": [{"from": "09:00", "to": "17:00"}], "outside": "drop"}},
            ("windows", "outside"),
        ),
        ({"retry": {"attempts": 11}}, ("retries",)),
    ],
)
def test_a_bad_control_is_refused_naming_it(changes: dict[str, Any], loc: tuple) -> None:
    assert refusal(ScheduleSpec, spec(**changes)) == [loc]
    assert refusal(SchedulePatch, changes) == [loc]


def test_the_retry_object_sets_the_flat_retry_fields() -> None:
    retry = {"attempts": 3, "delay_seconds": 60, "backoff": "exponential", "max_delay_seconds": 600}
    parsed = ScheduleSpec.model_validate(spec(retry=retry))
    assert (parsed.retries, parsed.retry_delay_seconds) == (3, 60)
    assert (parsed.retry_backoff, parsed.retry_max_delay_seconds) == ("exponential", 600)
    assert SchedulePatch.model_validate({"retry": {"attempts": 1}}).apply_to(parsed)["retries"] == 1
    with pytest.raises(ValidationError, match="not both"):
        ScheduleSpec.model_validate(spec(retries=2, retry={"attempts": 3}))
    with pytest.raises(ValidationError, match="unknown keys"):
        ScheduleSpec.model_validate(spec(retry={"tries": 3}))


def test_windows_take_from_and_to_and_answer_with_them() -> None:
    body = {"days": ["Monday", "fri"], "from": "22:00", "to": "06:00", "timezone": "Europe/Paris"}
    parsed = ScheduleSpec.model_validate(spec(windows={"allowed": [body], "outside": "skip"}))
    assert parsed.windows is not None
    window = parsed.windows.allowed[0]
    assert (window.days, window.start, window.end) == (["mon", "fri"], "22:00", "06:00")
    dumped = parsed.model_dump(mode="json")["windows"]
    assert dumped == {"allowed": [{**body, "days": ["mon", "fri"]}], "outside": "skip"}
    assert ScheduleSpec.model_validate(parsed.model_dump(mode="json")) == parsed


def test_controls_default_to_prefects_behaviour() -> None:
    parsed = ScheduleSpec.model_validate(spec())
    assert (parsed.priority, parsed.collision, parsed.jitter_seconds) == ("normal", "enqueue", 0)
    assert parsed.catchup.policy == "all" and parsed.windows is None
    assert parsed.timeout_seconds is None and parsed.retry_backoff == "fixed"


def test_limits_are_named_alone_or_with_a_size() -> None:
    parsed = ScheduleSpec.model_validate(
        spec(
            limits=["warehouse", {"name": "crm:api", "size": 3}],
            rate_limit={"name": "x", "per_second": 0.5},
        )
    )
    assert [(lim.name, lim.size) for lim in parsed.limits] == [("warehouse", None), ("crm:api", 3)]
    assert refusal(ScheduleSpec, spec(limits=["no spaces"])) == [("limits", 0, "name")]
    assert refusal(ScheduleSpec, spec(rate_limit={"name": "x", "per_second": 0})) == [
        ("rate_limit", "per_second")
    ]


def test_depends_on_names_schedules_each_once() -> None:
    spec = ScheduleSpec.model_validate({"name": "b", "pipeline": "crew", "depends_on": ["a"]})
    assert spec.depends_on == ["a"]
    for bad in (["a", "a"], ["Not A Slug"], [f"s{i}" for i in range(21)]):
        with pytest.raises(ValidationError) as refused:
            ScheduleSpec.model_validate({"name": "b", "pipeline": "crew", "depends_on": bad})
        assert refused.value.errors()[0]["loc"][0] == "depends_on"
    assert SchedulePatch.model_validate({"depends_on": []}).depends_on == []
