# Two commands for a fresh machine with Python 3.11+ and make: `make run` and `make test`.
# uv from PATH, else the one pip installs (run as a module, wherever pip put it).
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif

.PHONY: run test lint format sync uv migrate bench

# pip refuses --user inside a venv and system installs under PEP 668: try each way quietly,
# say in one line which worked, and show pip's error only if none did.
uv:
	@$(UV) --version >/dev/null 2>&1 || { { \
		python3 -m pip install --quiet --user uv 2>/dev/null \
		|| python3 -m pip install --quiet uv 2>/dev/null \
		|| python3 -m pip install --quiet --user --break-system-packages uv; \
	} && echo "installed $$(python3 -m uv --version) with pip (used as python3 -m uv)"; }

sync: uv
	$(UV) sync --locked --compile-bytecode

run: sync ## Prefect server, migrations, work pool, blocks, deployments, worker and API
	$(UV) run --no-sync python -m deployments.stack

test: sync ## the whole suite: SQLite, PostgreSQL (TEST_POSTGRES_URL), Prefect server, worker
	$(UV) run --no-sync pytest

lint: sync
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync ruff format --check .
	$(UV) run --no-sync mypy .

format: sync
	$(UV) run --no-sync ruff format .
	$(UV) run --no-sync ruff check --fix .

migrate: sync
	$(UV) run --no-sync python -m db.migrate
