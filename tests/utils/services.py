"""The ports of the session's fake services, chosen once at import (standard library only:
conftest reads them before Prefect loads, to export the URLs the worker inherits)."""

from __future__ import annotations

from tests.utils.ports import free_port

# The fake email-service of the job registry tests (EMAIL_SERVICE_URL).
EMAIL_SERVICE_PORT = free_port()
EMAIL_SERVICE_URL = f"http://127.0.0.1:{EMAIL_SERVICE_PORT}"
# The fake crew API of the crew pipeline tests (CREW_API_URL, as the crew scheduler configures it).
CREW_API_PORT = free_port()
CREW_API_URL = f"http://127.0.0.1:{CREW_API_PORT}/run-crew"
# The newsletter's SMTP server (SMTP_HOST/SMTP_PORT) and its fake content sources (one HTTP
# server: RSS, HTML pages and Reddit's listings at REDDIT_BASE_URL).
SMTP_PORT = free_port()
SMTP_FROM = "AI Digest <digest@example.com>"
CONTENT_PORT = free_port()
CONTENT_URL = f"http://127.0.0.1:{CONTENT_PORT}"
REDDIT_BASE_URL = f"{CONTENT_URL}/reddit"
