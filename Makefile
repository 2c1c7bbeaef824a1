# worldloop: `make run` starts the demo server, `make test` runs the whole suite.
# Both set up what they need first: a virtualenv with the locked dependencies (`make run` only the
# runtime ones, requirements/runtime.lock; the other targets also the dev ones, requirements/
# dev.lock) and, for tests, Chromium. `make lock` recompiles both locks from pyproject.toml.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 5000
# pytest-xdist processes for `make test`, each taking whole test files (module fixtures start
# once): most tests wait on real servers, so three run side by side even on two cores (17 min
# of serial pytest took 7 with three, 10-13 with two, on the 2-core machine of the last runs).
TEST_WORKERS ?= 3

# The lock tool lives in its own virtualenv, apart from the project's.
LOCK_VENV ?= .venv-lock
UV         = $(LOCK_VENV)/bin/uv
UV_COMPILE = $(UV) pip compile pyproject.toml --quiet --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command "make lock" $(if $(UPGRADE),--upgrade)

.PHONY: run test lint typecheck bench soak faults setup setup-dev browser lock clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==26.3"

# Runtime only: what the core imports, no extras, no tools.
$(VENV)/.runtime: requirements/runtime.lock pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --require-hashes -r requirements/runtime.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# Runtime + every extra + the dev group (dev.lock pins the runtime packages at the same versions).
$(VENV)/.dev: requirements/dev.lock $(VENV)/.runtime
	$(PY) -m pip install --quiet --require-hashes -r requirements/dev.lock
	touch $@

setup: $(VENV)/.runtime

setup-dev: $(VENV)/.dev

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

# The embedded default: the world runs in its own runner process; live viewers and command
# waits are served by the stream gateway on the next port (PORT + 1: the viewer is redirected
# there), all started by the server (docs/deploy.md).
run: setup
	$(VENV)/bin/flask --app worldloop.demo:create_app run --host $(HOST) --port $(PORT)

test: setup-dev browser
	$(PY) -m ruff check src tests bench
	$(PY) -m mypy
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: setup-dev
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench

typecheck: setup-dev
	$(PY) -m mypy

bench: setup-dev
	$(PY) bench/run_all.py

# The standing fault suite, long version (~15 min): kill -9, SIGTERM with streams, store faults,
# schemathesis against a live server; results in bench/results/faults.md. A short version runs
# inside `make test` (tests/test_faults.py).
faults: setup-dev
	$(PY) bench/faults/run.py --out bench/results/faults.md

# Ten minutes of streams and commands against a live server; RSS and threads over time.
soak: setup-dev
	$(PY) bench/soak.py --out bench/results/soak.md

$(UV):
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet "uv==0.13.9"

# Recompile both locks from pyproject.toml, keeping the pinned versions that still fit
# (`make lock UPGRADE=1` moves every package to its newest allowed release).
lock: $(UV)
	$(UV_COMPILE) -o requirements/runtime.lock
	$(UV_COMPILE) --all-extras --group dev -c requirements/runtime.lock -o requirements/dev.lock

clean:
	rm -rf $(VENV) $(LOCK_VENV) instance .pytest_cache .mypy_cache .ruff_cache test-artifacts
