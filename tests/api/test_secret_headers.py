"""Security item 2: credential headers are never readable through Prefect's API.

A Secret block holding the headers as a JSON string is masked by Prefect's block-document
filter (`include_secrets: false`); one holding a JSON object is shown in clear, so a schedule
naming it is refused (422 naming `source.headers_secret`, nothing created), and
`python -m blocks.secret_headers protect NAME` re-saves it as a string."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
from prefect.blocks.system import Secret

from settings import PROJECT_DIR
from tests.utils.factories import api_call_spec
from tests.utils.prefect_server import deployment_count

HEADERS = {"Authorization": "Bearer s3cret-token"}


def shown_by_prefect(api_url: str, name: str) -> list[dict[str, Any]]:
    """What anyone with Prefect's API sees of block `name`, as the issue's filter call asks."""
    response = httpx.post(
        f"{api_url}/block_documents/filter",
        json={"include_secrets": False, "block_documents": {"name": {"any_": [name]}}},
        timeout=30,
    )
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()
    return found


def test_headers_stored_as_a_string_are_masked_and_accepted(api, prefect_api_url) -> None:
    Secret(value=json.dumps(HEADERS)).save("masked-creds", overwrite=True)
    shown = shown_by_prefect(prefect_api_url, "masked-creds")
    assert len(shown) == 1
    assert "s3cret" not in json.dumps(shown)
    spec = api_call_spec("masked-creds", "https://example.com")
    spec["parameters"]["source"]["headers_secret"] = "masked-creds"
    response = api.post("/api/schedules", json=spec)
    assert response.status_code == 201, response.text
    assert api.delete("/api/schedules/masked-creds").status_code == 204


def test_a_json_object_secret_is_refused_and_protect_masks_it(api, prefect_api_url) -> None:
    Secret(value=HEADERS).save("clear-creds", overwrite=True)
    assert "s3cret" in json.dumps(shown_by_prefect(prefect_api_url, "clear-creds"))  # Prefect's

    before = deployment_count(prefect_api_url)
    spec = api_call_spec("clear-creds", "https://example.com")
    spec["parameters"]["source"]["headers_secret"] = "clear-creds"
    response = api.post("/api/schedules", json=spec)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"][-2:] == ["source", "headers_secret"]
    assert "blocks.secret_headers protect clear-creds" in error["msg"]
    assert "s3cret" not in response.text
    assert deployment_count(prefect_api_url) == before

    protect = [sys.executable, "-m", "blocks.secret_headers", "protect", "clear-creds"]
    env = {"PREFECT_API_URL": prefect_api_url, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(protect, cwd=PROJECT_DIR, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "s3cret" not in json.dumps(shown_by_prefect(prefect_api_url, "clear-creds"))
    assert Secret.load("clear-creds").get() == HEADERS  # type: ignore[union-attr]
    assert api.post("/api/schedules", json=spec).status_code == 201
    assert api.delete("/api/schedules/clear-creds").status_code == 204
