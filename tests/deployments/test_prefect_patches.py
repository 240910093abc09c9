"""Our fixes to Prefect: what they change, and the guards that refuse a Prefect they don't fit."""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import certifi
import prefect
import pytest
from prefect.client.orchestration import PrefectClient, SyncPrefectClient
from prefect.client.schemas.schedules import CronSchedule as ClientCron
from prefect.server.schemas.schedules import CronSchedule as ServerCron
from prefect.settings import (
    PREFECT_API_SSL_CERT_FILE,
    PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    temporary_settings,
)
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from deployments import prefect_patches
from deployments.prefect_patches import (
    SCHEDULE_CHECKS,
    PrefectPatchError,
    cache_schedule_checks,
    collect_garbage_off_the_loop,
    compute_settings_env_once,
    install_server_fixes,
    limit_only_http_requests,
    load_ca_bundle_once,
)
from settings import PROJECT_DIR


def test_schedules_list_time_zones_once(monkeypatch: pytest.MonkeyPatch) -> None:
    cache_schedule_checks()
    cache_schedule_checks()  # a second install changes nothing
    ServerCron(cron="0 9 * * 1", timezone="UTC")  # the one walk
    walks = 0
    real = zoneinfo.available_timezones

    def counting() -> set[str]:
        nonlocal walks
        walks += 1
        return real()

    monkeypatch.setattr("prefect.types._datetime.available_timezones", counting)
    for _ in range(50):
        ServerCron(cron="0 9 * * 1", timezone="Europe/Paris")
        ClientCron(cron="0 9 * * 1", timezone="UTC")
    assert walks == 0
    with pytest.raises(ValidationError, match="Invalid timezone"):
        ServerCron(cron="0 9 * * 1", timezone="Mars/Olympus_Mons")
    with pytest.raises(ValidationError, match="Invalid timezone"):
        ClientCron(cron="0 9 * * 1", timezone="Mars/Olympus_Mons")


def test_a_cron_string_is_checked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect._vendor.croniter import croniter

    cache_schedule_checks()
    ServerCron(cron="5 4 * * 2", timezone="UTC")
    checks = 0
    real = croniter.is_valid

    def counting(*args: object, **kwargs: object) -> bool:
        nonlocal checks
        checks += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(croniter, "is_valid", counting)
    for _ in range(20):
        ServerCron(cron="5 4 * * 2", timezone="UTC")
        ClientCron(cron="5 4 * * 2", timezone="UTC")
    assert checks == 0
    for cron in ("61 4 * * 2", "H 4 * * 2"):  # refused every time, with Prefect's message
        for model in (ServerCron, ClientCron, ServerCron):
            with pytest.raises(ValidationError, match=r"cron string|Hashed"):
                model(cron=cron, timezone="UTC")


def run_python(*args: str, **env: str) -> str:
    """`python <args>` in the project, with `env` added to ours; its standard output."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def client_tls(client: PrefectClient | SyncPrefectClient) -> ssl.SSLContext:
    """The TLS context a Prefect client's connections use (httpx -> httpcore's pool)."""
    context: ssl.SSLContext = client._client._transport._pool._ssl_context  # type: ignore[union-attr]
    return context


def test_prefect_clients_parse_a_ca_bundle_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    load_ca_bundle_once()
    load_ca_bundle_once()  # a second install changes nothing
    real, built = ssl.create_default_context, []

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(kwargs.get("cafile"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    end = "-----END CERTIFICATE-----"
    one_ca = Path(certifi.where()).read_text().split(end)[0].split("-----BEGIN")[-1]
    bundle = str(tmp_path / "ca.pem")
    Path(bundle).write_text(f"-----BEGIN{one_ca}{end}\n")
    with temporary_settings({PREFECT_API_SSL_CERT_FILE: bundle}):
        clients: list[PrefectClient | SyncPrefectClient]
        clients = [PrefectClient("https://127.0.0.1:9/api") for _ in range(3)]
        clients += [SyncPrefectClient("https://127.0.0.1:9/api") for _ in range(3)]
        contexts = {id(client_tls(client)) for client in clients}
    assert built == [bundle] and len(contexts) == 1  # one parse, one shared context
    shared = client_tls(clients[0])
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname
    assert shared.cert_store_stats()["x509_ca"] == 1

    # Skipping verification still builds a context of its own each time, as Prefect does.
    with temporary_settings({PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True}):
        insecure = [PrefectClient("https://127.0.0.1:9/api") for _ in range(2)]
    first, second = (client_tls(client) for client in insecure)
    assert first is not second and first.verify_mode == ssl.CERT_NONE
    assert shared.verify_mode == ssl.CERT_REQUIRED  # the shared one untouched


def test_settings_become_environment_variables_once_per_settings_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.settings import Settings, get_current_settings

    calls: list[object] = []
    original = Settings.to_environment_variables

    def counted(self: Settings, *args: Any, **kwargs: Any) -> dict[str, str]:
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Settings, "to_environment_variables", counted)  # Prefect's back after
    compute_settings_env_once()
    compute_settings_env_once()  # installed once
    settings = get_current_settings()
    first = settings.to_environment_variables(exclude_unset=True)
    first["PREFECT_API_URL"] = "changed by a caller"
    again = settings.to_environment_variables(exclude_unset=True)
    assert calls == [settings]
    assert again == original(settings, exclude_unset=True)  # each caller its own copy
    settings.to_environment_variables()  # other arguments: computed
    other = settings.model_copy(deep=True)
    other.to_environment_variables(exclude_unset=True)  # another object: computed
    assert calls == [settings, settings, other]


def test_websockets_do_not_use_up_the_sqlite_request_limit() -> None:
    from prefect.server.api.server import RequestLimitMiddleware

    limit_only_http_requests()
    limit_only_http_requests()  # a second install changes nothing
    inside, most_inside = 0, 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal inside, most_inside
        if scope["type"] == "websocket":
            await receive()  # a stream: open until the client goes
            return
        inside += 1
        most_inside = max(most_inside, inside)
        await asyncio.sleep(0.01)
        inside -= 1

    async def scene() -> None:
        limited = RequestLimitMiddleware(app, limit=2)
        gone = asyncio.Event()
        streams = [
            asyncio.create_task(limited({"type": "websocket"}, gone.wait, None)) for _ in range(5)
        ]
        await asyncio.sleep(0)
        # Five open streams, a limit of two: requests are still served, two at a time.
        requests = (limited({"type": "http"}, None, None) for _ in range(6))
        await asyncio.wait_for(asyncio.gather(*requests), 5)
        gone.set()
        await asyncio.gather(*streams)

    asyncio.run(scene())
    assert most_inside == 2


def test_prefect_server_module_is_prefects_cli() -> None:
    out = run_python("-m", "deployments.prefect_server", "version")
    assert "Version:" in out and "3.8." in out


# Python that prints, as JSON, the state of each fix in the process it runs in.
PRINT_FIXES = (
    "import gc, json, sys, threading\n"
    "import prefect.types._datetime as d, prefect.server.schemas.schedules as s\n"
    "def print_fixes(**more):\n"
    "    print(json.dumps({'gc': gc.isenabled(),\n"
    "        'zones': hasattr(d.get_timezones, 'cache_info'),\n"
    "        'cron_dst': getattr(s.CronSchedule._get_dates_generator, 'debian_cron', False),\n"
    "        'ca_once': type(__import__('prefect.client.orchestration').client\n"
    "            .orchestration.ssl).__name__ == 'SslBuildingCaContextsOnce',\n"
    "        'http_only': getattr(getattr(getattr(sys.modules.get('prefect.server.api.server'),\n"
    "            'RequestLimitMiddleware', None), '__call__', None), 'http_only', False),\n"
    "        'threads': [t.name for t in threading.enumerate()], **more}))\n"
)


def last_json(out: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(out.splitlines()[-1])
    return found


def run_probe(code: str, **env: str) -> dict[str, Any]:
    """Run PRINT_FIXES then `code` in a fresh interpreter; the JSON its last line prints."""
    return last_json(run_python("-c", PRINT_FIXES + code, **env))


def test_prefect_server_module_installs_every_fix_before_prefect_runs() -> None:
    # Prefect's CLI replaced by a probe that reports what it finds when it is called.
    found = run_probe(
        "import prefect.cli\n"
        "prefect.cli.app = print_fixes\n"
        "from deployments.prefect_server import main\n"
        "main()\n"
    )
    assert found["gc"] is False and found["zones"] is True and found["cron_dst"] is True
    assert found["ca_once"] is True and found["http_only"] is True
    assert "gc-off-the-loop" in found["threads"]


_CREATE_PREFECT_DB = (
    "import asyncio, json, sys\n"
    "from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, temporary_settings\n"
    "async def create():\n"
    "    from prefect.server.database import provide_database_interface\n"
    "    await provide_database_interface().create_db()\n"
    "with temporary_settings({PREFECT_API_DATABASE_CONNECTION_URL: sys.argv[1]}):\n"
    "    asyncio.run(create())\n"
    "print('{}')\n"
)


@pytest.fixture(scope="module")
def prefect_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with Prefect's schema, made once (its migrations take ~8 s)."""
    path = tmp_path_factory.mktemp("prefect-schema") / "prefect.db"
    run_python("-c", _CREATE_PREFECT_DB, f"sqlite+aiosqlite:///{path}")
    return path


def run_sqlite_scene(template: Path, database: Path, scene: str, fix: str | None) -> dict[str, Any]:
    """Run `scene` (the body of `async def scene()`, which prints its JSON answer) in a fresh
    process on a copy of `template` (Prefect's schema), with the fix named `fix` installed."""
    shutil.copyfile(template, database)
    code = (
        "import asyncio, json, sys\n"
        "import sqlalchemy as sa\n"
        "from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, temporary_settings\n"
        f"url = 'sqlite+aiosqlite:///' + {json.dumps(str(database))}\n"
        "async def scene():\n"
        "    from prefect.server.database import provide_database_interface\n"
        "    from prefect.server import models, schemas\n"
        "    db = provide_database_interface()\n"
        + scene
        + "with temporary_settings({PREFECT_API_DATABASE_CONNECTION_URL: url}):\n"
        + (f"    from deployments.prefect_patches import {fix}\n    {fix}()\n" if fix else "")
        + "    asyncio.run(scene())\n"
    )
    return last_json(run_python("-c", code))


LABELS_RACE = (
    "    async with db.session_context(begin_transaction=True) as s:\n"
    "        flow = await models.flows.create_flow(session=s,\n"
    "            flow=schemas.core.Flow(name='f'))\n"
    "        run = await models.flow_runs.create_flow_run(session=s,\n"
    "            flow_run=schemas.core.FlowRun(flow_id=flow.id, labels={'a': '1'}))\n"
    "    read = models.flow_runs.read_flow_run\n"
    "    async def other_writer():\n"
    "        async with db.session_context(begin_transaction=True) as s:\n"
    "            await models.flow_runs.update_flow_run(session=s, flow_run_id=run.id,\n"
    "                flow_run=schemas.actions.FlowRunUpdate(name='renamed'))\n"
    "    async def read_then_let_another_write(*args, **kwargs):\n"
    "        found = await read(*args, **kwargs)\n"
    "        writer = asyncio.create_task(other_writer())\n"
    "        await asyncio.sleep(0.5)  # it commits now, unless it waits for our lock\n"
    "        tasks.append(writer)\n"
    "        return found\n"
    "    tasks = []\n"
    "    models.flow_runs.read_flow_run = read_then_let_another_write\n"
    "    try:\n"
    "        async with db.session_context(begin_transaction=True) as s:\n"
    "            await models.flow_runs.update_flow_run_labels(session=s, flow_run_id=run.id,\n"
    "                labels={'b': '2'})\n"
    "        outcome = 'updated'\n"
    "    except Exception as exc:\n"
    "        outcome = type(exc.orig).__name__ + ': ' + str(exc.orig)\n"
    "    models.flow_runs.read_flow_run = read\n"
    "    await asyncio.gather(*tasks)\n"
    "    async with db.session_context() as s:\n"
    "        final = await read(session=s, flow_run_id=run.id)\n"
    "    print(json.dumps({'outcome': outcome, 'labels': final.labels, 'name': final.name}))\n"
)


@pytest.mark.parametrize(
    ("race", "other_write"),
    [("labels", ("name", "renamed")), ("trigger", ("flows", ["o"]))],
)
def test_a_read_then_write_racing_another_writer_on_sqlite_fails_unpatched(
    tmp_path: Path, prefect_schema: Path, race: str, other_write: tuple[str, Any]
) -> None:
    # What the fixes are for: Prefect's read-then-write transaction loses the race at once
    # (the other writer's change landed).
    found = run_race(race, prefect_schema, tmp_path / "prefect.db", fixed=False)
    assert "locked" in found["outcome"] or "BUSY" in found["outcome"], found
    key, value = other_write
    assert found[key] == value


def test_a_label_update_takes_sqlites_write_lock_first(
    tmp_path: Path, prefect_schema: Path
) -> None:
    found = run_race("labels", prefect_schema, tmp_path / "prefect.db", fixed=True)
    assert found["outcome"] == "updated", found
    # Both writes landed: the other writer waited for the label update, then renamed the run.
    assert found["labels"]["b"] == "2" and found["labels"]["a"] == "1"
    assert found["name"] == "renamed"


TRIGGER_RACE = (
    "    from prefect.server.events import triggers\n"
    "    async def other_writer():\n"
    "        async with db.session_context(begin_transaction=True) as s:\n"
    "            await models.flows.create_flow(session=s, flow=schemas.core.Flow(name='o'))\n"
    "    try:\n"
    "        async with triggers.automations_session(begin_transaction=True) as s:\n"
    "            await s.execute(sa.text('SELECT count(*) FROM flow'))\n"
    "            writer = asyncio.create_task(other_writer())\n"
    "            await asyncio.sleep(0.5)  # it commits now, unless it waits for our lock\n"
    "            await models.flows.create_flow(session=s, flow=schemas.core.Flow(name='m'))\n"
    "        outcome = 'written'\n"
    "    except Exception as exc:\n"
    "        outcome = type(exc.orig).__name__ + ': ' + str(exc.orig)\n"
    "    await writer\n"
    "    async with db.session_context() as s:\n"
    "        names = (await s.execute(sa.text('SELECT name FROM flow'))).scalars().all()\n"
    "    print(json.dumps({'outcome': outcome, 'flows': sorted(names)}))\n"
)


# Each race: Prefect's read-then-write transaction (the labels update, the triggers
# service's evaluation) racing another writer, and the fix that makes it take the lock first.
RACES = {
    "labels": (LABELS_RACE, "write_labels_under_the_write_lock"),
    "trigger": (TRIGGER_RACE, "evaluate_triggers_under_the_write_lock"),
}


def run_race(race: str, template: Path, database: Path, fixed: bool) -> dict[str, Any]:
    scene, fix = RACES[race]
    return run_sqlite_scene(template, database, scene, fix if fixed else None)


def test_a_trigger_evaluation_takes_sqlites_write_lock_first(
    tmp_path: Path, prefect_schema: Path
) -> None:
    found = run_race("trigger", prefect_schema, tmp_path / "prefect.db", fixed=True)
    assert found["outcome"] == "written", found
    assert found["flows"] == ["m", "o"]  # the other writer waited its turn


def run_gc_scene(mode: str) -> dict[str, Any]:
    return last_json(run_python("-m", "tests.utils.gc_deadlock", mode))


def test_garbage_collected_on_the_loop_stalls_it_for_the_busy_timeout() -> None:
    # The failure the fix is for, on this Python and SQLite: the loop waits out B's timeout.
    scene = run_gc_scene("plain")
    assert scene["freed_in"] == "MainThread"
    assert float(str(scene["blocked"])) > 2
    assert scene["inserted"] is False


def test_garbage_collected_off_the_loop_leaves_it_running() -> None:
    scene = run_gc_scene("fix")
    assert scene["freed_in"] == "gc-off-the-loop"
    assert float(str(scene["blocked"])) < 1.5
    assert scene["inserted"] is True


def test_a_second_install_changes_nothing() -> None:
    found = run_probe(
        "from deployments.prefect_patches import install_server_fixes\n"
        "install_server_fixes()\n"
        "zones, dates = d.get_timezones, s.CronSchedule._get_dates_generator\n"
        "install_server_fixes()\n"
        "print_fixes(same=d.get_timezones is zones\n"
        "    and s.CronSchedule._get_dates_generator is dates)\n"
    )
    assert found["same"] is True and found["gc"] is False
    assert found["threads"].count("gc-off-the-loop") == 1


def test_importing_the_api_patches_nothing_and_starting_it_caches_schedule_checks(
    sqlite_engine: Engine,
) -> None:
    # The lifespan opens a Prefect client, which connects only on a request: no server needed;
    # it checks our (session's, migrated) database.
    found = run_probe(
        "from fastapi.testclient import TestClient\n"
        "import api.main\n"
        "imported = hasattr(d.get_timezones, 'cache_info')\n"
        "with TestClient(api.main.app):\n"
        "    print_fixes(imported=imported)\n",
        PREFECT_API_URL="http://127.0.0.1:9/api",
    )
    assert found["imported"] is False
    assert found["zones"] is True and found["cron_dst"] is True  # started: the client fixes
    assert found["ca_once"] is True
    assert found["gc"] is True  # the API serves no Prefect: the collector stays where it is


@pytest.fixture
def unpatched(monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable[..., object]]:
    """Everything the schedule fix replaces set to uncached stand-ins (Prefect's back after)."""
    stand_ins: dict[str, Callable[..., object]] = {
        "get_timezones": lambda: {"UTC"},
        "validate_cron_string": lambda value: value,
    }
    for target in SCHEDULE_CHECKS.replaces:
        module, attribute = target.split(":")
        monkeypatch.setattr(importlib.import_module(module), attribute, stand_ins[attribute])
    return stand_ins


def assert_nothing_patched(stand_ins: dict[str, Callable[..., object]], gc_was: bool) -> None:
    """Assert the schedule fix's attributes are still the stand-ins, and the collector as it was."""
    for target in SCHEDULE_CHECKS.replaces:
        module, attribute = target.split(":")
        assert getattr(importlib.import_module(module), attribute) is stand_ins[attribute], target
    assert gc.isenabled() is gc_was
    assert "gc-off-the-loop" not in [t.name for t in threading.enumerate()]


@pytest.mark.parametrize("version", ["3.9.0", "3.7.4", "4.0.0rc1", "not-a-version"])
@pytest.mark.parametrize(
    "install",
    [
        "cache_schedule_checks",
        "plan_cron_by_debian_rules",
        "load_ca_bundle_once",
        "limit_only_http_requests",
        "evaluate_triggers_under_the_write_lock",
        "collect_garbage_off_the_loop",
        "compute_settings_env_once",
    ],
)
def test_each_fix_refuses_a_prefect_outside_its_versions_and_patches_nothing(
    monkeypatch: pytest.MonkeyPatch,
    unpatched: dict[str, Callable[..., object]],
    install: str,
    version: str,
) -> None:
    gc_was = gc.isenabled()
    monkeypatch.setattr(prefect, "__version__", version)
    for call in (getattr(prefect_patches, install), install_server_fixes):
        with pytest.raises(PrefectPatchError) as refused:
            call()
        message = str(refused.value)
        # install_server_fixes checks the schedule fix first: that is the one it names.
        named = install if call is not install_server_fixes else "cache_schedule_checks"
        assert named in message and f"Prefect {version}" in message
        assert "widen its supported versions" in message
    assert_nothing_patched(unpatched, gc_was)


@pytest.mark.parametrize("target", SCHEDULE_CHECKS.replaces)
def test_the_schedule_fix_refuses_when_an_attribute_it_replaces_is_gone_and_patches_nothing(
    monkeypatch: pytest.MonkeyPatch, unpatched: dict[str, Callable[..., object]], target: str
) -> None:
    gc_was = gc.isenabled()
    module, attribute = target.split(":")
    monkeypatch.delattr(importlib.import_module(module), attribute)
    for call in (cache_schedule_checks, install_server_fixes):
        with pytest.raises(PrefectPatchError, match="cache_schedule_checks") as refused:
            call()
        assert f"{module}.{attribute}" in str(refused.value)
        assert "re-check the patch" in str(refused.value)
    # Put the deleted one back: every other attribute must still be its untouched stand-in.
    monkeypatch.setattr(
        importlib.import_module(module), attribute, unpatched[attribute], raising=False
    )
    assert_nothing_patched(unpatched, gc_was)


@pytest.mark.parametrize("target", prefect_patches.CRON_DST.replaces)
def test_the_cron_fix_refuses_when_what_it_replaces_or_relies_on_is_gone(
    monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    module, attribute = target.split(":")
    owner: object = importlib.import_module(module)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    monkeypatch.delattr(owner, name)
    with pytest.raises(PrefectPatchError, match="plan_cron_by_debian_rules") as refused:
        prefect_patches.plan_cron_by_debian_rules()
    assert name in str(refused.value) and "re-check the patch" in str(refused.value)


def test_the_schedule_fix_refuses_a_module_whose_copy_is_another_function(
    monkeypatch: pytest.MonkeyPatch, unpatched: dict[str, Callable[..., object]]
) -> None:
    own = "prefect.client.schemas.schedules"
    monkeypatch.setattr(f"{own}.validate_cron_string", lambda value: value)
    with pytest.raises(PrefectPatchError, match="cache_schedule_checks") as refused:
        cache_schedule_checks()
    assert f"{own}.validate_cron_string" in str(refused.value)
    monkeypatch.setattr(f"{own}.validate_cron_string", unpatched["validate_cron_string"])
    assert_nothing_patched(unpatched, gc.isenabled())


@pytest.mark.parametrize(("implementation", "python"), [("PyPy", "3.11.9"), ("CPython", "3.14.0")])
def test_the_gc_fix_refuses_another_python_and_install_patches_nothing(
    monkeypatch: pytest.MonkeyPatch,
    unpatched: dict[str, Callable[..., object]],
    implementation: str,
    python: str,
) -> None:
    gc_was = gc.isenabled()
    monkeypatch.setattr(prefect_patches.platform, "python_implementation", lambda: implementation)
    monkeypatch.setattr(prefect_patches.platform, "python_version", lambda: python)
    for call in (collect_garbage_off_the_loop, install_server_fixes):
        with pytest.raises(PrefectPatchError, match="collect_garbage_off_the_loop") as refused:
            call()
        assert f"{implementation} {python}" in str(refused.value)
    # install_server_fixes checks both before patching either: the schedule fix is not applied.
    assert_nothing_patched(unpatched, gc_was)


@pytest.mark.parametrize("version", ["3.9.0", "3.7.4"])
def test_the_zygote_start_hook_refuses_a_prefect_outside_its_versions(
    monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    from prefect.runner import _starter_engine

    before = _starter_engine.run_process
    monkeypatch.setattr(prefect, "__version__", version)

    async def run(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("never called")

    with pytest.raises(PrefectPatchError, match="start_runs_in_zygote") as refused:
        prefect_patches.start_runs_in_zygote("zygote-engine", run)
    assert f"Prefect {version}" in str(refused.value)
    assert _starter_engine.run_process is before


def test_the_zygote_start_hook_sends_only_its_command_to_the_zygote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.runner import _starter_engine

    calls: list[tuple[str, object]] = []

    async def stock(*args: object, **kwargs: object) -> str:
        calls.append(("stock", kwargs["command"]))
        return "stock"

    async def zygote(*args: object, **kwargs: object) -> str:
        calls.append(("zygote", kwargs["command"]))
        return "zygote"

    monkeypatch.setattr(_starter_engine, "run_process", stock)
    prefect_patches.start_runs_in_zygote("zygote-engine", zygote)
    prefect_patches.start_runs_in_zygote("zygote-engine", zygote)  # a second install: the same
    dispatch = _starter_engine.run_process
    assert asyncio.run(dispatch(command=["zygote-engine"])) == "zygote"
    assert asyncio.run(dispatch(command=["python", "-m", "prefect.engine"])) == "stock"
    assert calls == [("zygote", ["zygote-engine"]), ("stock", ["python", "-m", "prefect.engine"])]
