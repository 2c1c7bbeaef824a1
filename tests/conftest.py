"""Fixtures shared by the whole suite."""

from __future__ import annotations

import collections
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each schemathesis test (one per API operation) gets its name as its node id.

    Under pytest 9 schemathesis names them ``test_x[GET /path]`` but gives all of them the id
    ``test_x``; pytest-xdist (``make test``) schedules whole files by node id and would run one
    of them per file. Node ids stay the same in every worker: they come from the document.
    """
    for item in items:
        parent, _, last = item.nodeid.rpartition("::")
        if getattr(item, "operation_label", None) is None or last == item.name:
            continue
        item._id = type(item._id).parse(f"{parent}::{item.name}")  # pytest 9's structured id
    shared = [n for n, c in collections.Counter(i.nodeid for i in items).items() if c > 1]
    if shared:  # pytest-xdist would run one of each, silently
        raise pytest.UsageError(f"tests that share a node id: {shared[:5]}")


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
