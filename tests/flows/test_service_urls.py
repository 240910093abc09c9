"""Service job URLs: an endpoint is a plain path; the allow-list is checked on what is called."""

from __future__ import annotations

import pytest

from flows.service_job_params import check_endpoint, resolve_service_url, within_prefix

SERVICES = {"email-service": "http://h:9/email"}
ALLOW = ["http://h:9/email/"]

ESCAPES = [
    "/../admin",
    "/x/../../admin",
    "/./../admin",
    "/..",
    "/.",
    "/x/..",
    "/%2e%2e/admin",
    "/%2E%2E/admin",
    "/.%2e/admin",
    "/%2e./admin",
    "/x%2f..%2f..%2fadmin",
    "/x%5c..%5cadmin",
    "/..\\admin",
    "/x\\..\\admin",
    "/@evil.example/x",
    "/x@evil.example",
    "//evil.example/x",
    "/x//y",
    "/x?next=/admin",
    "/x#frag",
    "/x y",
    "/x\ty",
    "/x\n",
    "/\u2025/admin",
    "/%00",
    "http://evil.example/x",
    "x/y",
    "",
]


@pytest.mark.parametrize("endpoint", ESCAPES)
def test_an_endpoint_that_could_leave_its_path_is_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="must"):
        check_endpoint(endpoint)
    with pytest.raises(ValueError, match="must"):
        resolve_service_url(SERVICES, ALLOW, "email-service", endpoint)


@pytest.mark.parametrize(
    "endpoint", ["/", "/api/jobs/weekly-digest", "/jobs/v1.2/run_now", "/a:b/c~d/", "/x...y"]
)
def test_plain_paths_are_endpoints(endpoint: str) -> None:
    assert check_endpoint(endpoint) == endpoint
    url = resolve_service_url(SERVICES, ALLOW, "email-service", endpoint)
    assert url == "http://h:9/email" + endpoint


@pytest.mark.parametrize(
    ("url", "prefix", "inside"),
    [
        ("http://h:9/email/x", "http://h:9/email/", True),
        ("http://h:9/email/x", "http://h:9/email", True),
        ("http://h:9/email", "http://h:9/email", True),
        ("http://h:9/emailer/x", "http://h:9/email", False),
        ("http://h:9/admin", "http://h:9/email/", False),
        ("http://H:9/email/x", "http://h:9/email/", True),
        ("https://h:9/email/x", "http://h:9/email/", False),
        ("http://h:10/email/x", "http://h:9/email/", False),
        ("http://h:9.evil.example/email/x", "http://h:9/email/", False),
        ("http://h:9/x", "http://h:9/", True),
    ],
)
def test_the_allow_list_matches_scheme_host_and_whole_path_segments(
    url: str, prefix: str, inside: bool
) -> None:
    assert within_prefix(url, prefix) is inside


def test_a_url_outside_the_allow_list_names_it() -> None:
    with pytest.raises(PermissionError, match="outside the service allow-list"):
        resolve_service_url({"email-service": "http://h:9/other"}, ALLOW, "email-service", "/x")
