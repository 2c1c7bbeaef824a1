"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from flask import Flask

from tests.browser import browser, page, phone  # noqa: F401 - fixtures for the viewer tests
from tests.clock_support import on_pool  # noqa: F401 - the clock tests run on both loops
from tests.redis_support import (  # noqa: F401 - fixtures for the Redis-mode tests
    own_redis,
    prefix,
    schema,
)
from tests.store_support import sql_db  # noqa: F401 - a SQLite file, then a PostgreSQL schema
from worldloop import ManualClock


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock(start=1000.0)


@pytest.fixture
def app(tmp_path) -> Iterator[Flask]:
    """The demo app on a temporary instance folder, loop running on the real clock."""
    from worldloop.demo import create_app

    os.environ.pop("WERKZEUG_RUN_MAIN", None)
    flask_app = create_app(
        {"TESTING": True, "WORLDLOOP_HANDLE_SIGNALS": False},
        instance_path=str(tmp_path / "instance"),
    )
    yield flask_app
    flask_app.extensions["worldloop"].stop()


@pytest.fixture
def client(app: Flask):
    return app.test_client()
