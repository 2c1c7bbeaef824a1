# worldloop: `make run` starts the demo server, `make test` runs the whole suite.
# Both set up what they need first (a virtualenv with the locked dependencies; Chromium for tests).

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: run test lint typecheck bench setup browser clean

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==26.3"
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

setup: $(VENV)/.installed

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

run: setup
	$(VENV)/bin/flask --app worldloop.demo:create_app run --host $(HOST) --port $(PORT)

test: setup browser
	$(PY) -m ruff check src tests bench
	$(PY) -m mypy
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench

typecheck: setup
	$(PY) -m mypy

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache test-artifacts
