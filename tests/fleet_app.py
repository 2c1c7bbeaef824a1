"""The test server of the Redis mode's many worlds (tests/test_scaleout_fleet.py): the Drift
world of tests/durability_app as the default world and as a kind, ``drift``, whose worlds the
API creates. ``POST /test/worlds/<name>/commands`` submits a command to any world and answers
once it is applied (acknowledged only after its journal commit), 202 if not within 10 s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, request

from tests.durability_app import Drift
from tests.durability_app import create_app as drift_app
from worldloop.state import state_of


def drift(config: Mapping[str, Any]) -> Drift:
    """A world of kind ``drift``: ``{"particles": 4, "seed": 1}``."""
    return Drift(int(config.get("particles", 4)), int(config.get("seed", 1)))


def create_app() -> Flask:
    """The durability test server (config from WORLDLOOP_* variables) with the kind."""
    app = drift_app(kinds={"drift": drift})

    @app.post("/test/worlds/<name>/commands")
    def submit_to_world(name: str) -> tuple[dict[str, Any], int]:
        body = request.get_json(force=True)
        rt = state_of().host.get(name).runtime
        ticket = rt.submit(body["type"], body.get("payload") or {})
        if not ticket.wait(10.0):
            return {"command_id": ticket.id, "status": "queued"}, 202
        return ticket.to_dict(), 200

    return app
