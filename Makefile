# AgentMargin. `make demo` runs the product on SQLite with the local API
# simulator; `make test` runs the suite against PostgreSQL and Redis.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install browser demo test worker beat lint format lock benchmark benchmark-workers benchmark-import clean

install: $(INSTALLED)

$(INSTALLED): requirements/dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required; set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements/dev.lock
	touch $(INSTALLED)

demo: install
	bin/demo

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The browser tests drive Debian's Chromium through Playwright, which never
# downloads a browser of its own. apt-get runs only when it is missing, and
# needs root.
CHROMIUM := /usr/bin/chromium

browser:
	@test -x $(CHROMIUM) || { \
		echo "Installing Chromium for the browser tests (apt-get install chromium)"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	}

# Celery worker and beat against the configured broker (REDIS_URL or
# CELERY_BROKER_URL) and database (DATABASE_URL).
worker: install
	$(VENV)/bin/celery -A config worker --loglevel INFO --concurrency $${WORKER_CONCURRENCY:-2}

beat: install
	$(VENV)/bin/celery -A config beat --loglevel INFO

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Re-resolve the pinned dependencies after editing requirements/*.in.
lock: install
	$(VENV)/bin/uv pip compile --quiet --python-version 3.11 --generate-hashes requirements/base.in -o requirements/base.lock
	$(VENV)/bin/uv pip compile --quiet --python-version 3.11 --generate-hashes requirements/dev.in -o requirements/dev.lock

benchmark: install
	DJANGO_SETTINGS_MODULE=config.settings.test $(PY) benchmarks/record_stream.py

benchmark-workers: install
	$(PY) benchmarks/worker_throughput.py --executions 40

benchmark-import: install
	$(PY) benchmarks/import_logs.py --size-mb 1024

clean:
	rm -rf $(VENV) var agentmargin.sqlite3
