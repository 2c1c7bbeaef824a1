"""A schemathesis run against the OpenAPI document: no 5xx, every response fits the schema."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis import checks as st_checks

from worldloop.api.openapi import document
from worldloop.demo import create_app

ADMIN_TOKEN = "fuzz-admin"
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.response_headers_conformance,
]


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    os.environ.pop("WERKZEUG_RUN_MAIN", None)
    app = create_app(
        {
            "TESTING": True,
            "WORLDLOOP_HANDLE_SIGNALS": False,
            "WORLDLOOP_ADMIN_TOKEN": ADMIN_TOKEN,
            "WORLDLOOP_RATE_HZ": 50.0,
            "WORLDLOOP_COMMAND_WAIT": 0.5,
            "WORLDLOOP_LONG_POLL_MAX": 0.3,
            "WORLDLOOP_RATE_LIMIT": 1000.0,
            "WORLDLOOP_RATE_BURST": 1000,
            "WORLDLOOP_JOIN_RATE_LIMIT": 1000.0,
            "WORLDLOOP_JOIN_RATE_BURST": 1000,
            "MEADOW_ENTITIES": 200,
            "MEADOW_WIDTH": 300.0,
            "MEADOW_HEIGHT": 300.0,
        },
        instance_path=str(tmp_path_factory.mktemp("fuzz") / "instance"),
    )
    yield app
    app.extensions["worldloop"].stop()


@pytest.fixture(scope="module")
def player_token(fuzz_app: Flask) -> str:
    resp = fuzz_app.test_client().post("/api/v1/players", json={"name": "fuzzer"})
    assert resp.status_code == 201
    token: str = resp.json["token"]
    return token


# The document is static, so the schema loads at collection time without starting a world;
# requests go to the module's running app (``app=`` below).
schema = schemathesis.openapi.from_dict(document())


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_fuzz_the_api(case: Any, player_token: str, fuzz_app: Flask) -> None:
    """Generated requests (valid and invalid) with real credentials where a path needs them."""
    path = case.operation.path
    headers: dict[str, str] = {}
    if path.startswith("/api/v1/admin"):
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        if path == "/api/v1/admin/rate":
            # a rate near zero would only slow the rest of the run down; keep the world ticking
            body = case.body if isinstance(case.body, dict) else {}
            if isinstance(body.get("rate_hz"), int | float) and body["rate_hz"] < 5:
                body["rate_hz"] = 5
    elif path.startswith("/api/v1/commands"):
        headers["Authorization"] = f"Bearer {player_token}"
    case.call_and_validate(app=fuzz_app, headers=headers, checks=CHECKS)
