"""Declared commands and operations: a world's command models validate (422) and are documented;
routes declare their models and the document is built from them; one parser per parameter."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jsonschema_rs
import pytest
from flask import Flask, request
from pydantic import BaseModel, Field

from worldloop import Command, CommandInvalid, System, World, WorldLoop, get_runtime
from worldloop.api.declare import Reply, operation
from worldloop.api.openapi import build_document
from worldloop.api.v1 import register_v1
from worldloop.demo.docs import document
from worldloop.demo.meadow import Meadow
from worldloop.models import Finite

from .test_api_v1 import ADMIN, assert_error, bearer, join, make_app


class Add(BaseModel):
    """Add to the tally."""

    by: int = Field(ge=-100, le=100)


class Scale(BaseModel):
    factor: Finite


class Reset(BaseModel):
    why: str


class Tally(World):
    """A user's world that writes no validation: its commands are declared with models."""

    name = "tally"
    commands = {"add": Add, "scale": Scale}
    internal_commands = {"reset": Reset}

    def __init__(self) -> None:
        super().__init__()
        self.n = 0.0

    def apply(self, command: Command) -> Any:
        if command.type == "add":
            self.n += command.payload["by"]
        elif command.type == "scale":
            self.n *= command.payload["factor"]
        else:
            self.n = 0.0
        return {"n": self.n}

    def systems(self) -> Sequence[System]:
        return ()

    def get_state(self) -> dict[str, Any]:
        return {"n": self.n}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.n = float(state["n"])

    def view(self) -> dict[str, Any]:
        return {"n": self.n}


@pytest.mark.parametrize(
    ("type_", "payload", "actor", "field"),
    [
        ("add", {}, None, "by"),
        ("add", {"by": 101}, None, "by"),
        ("add", {"by": "x"}, None, "by"),
        ("scale", {"factor": float("nan")}, None, "factor"),
        ("scale", {"factor": 10**400}, None, "factor"),
        ("fly", {}, None, "type"),
        ("reset", {"why": "x"}, "player-1", "type"),
    ],
)
def test_declared_models_validate_commands(
    type_: str, payload: dict[str, Any], actor: str | None, field: str
) -> None:
    with pytest.raises(CommandInvalid) as refused:
        Tally().validate(type_, payload, actor)
    assert refused.value.details["field"] == field


def test_declared_models_normalize_payloads() -> None:
    world = Tally()
    assert world.validate("add", {"by": 3, "extra": 1}, "p") == {"by": 3}
    assert world.validate("scale", {"factor": 2}, None) == {"factor": 2.0}
    assert world.validate("reset", {"why": "new day"}, None) == {"why": "new day"}


def test_meadow_payloads_keep_their_journaled_shape() -> None:
    """Absent optional fields stay absent, so journals written before the models replay alike."""
    world = Meadow(width=10, height=10, entities=1)
    assert world.validate("move_to", {"x": 1, "y": 2}, "p") == {"x": 1.0, "y": 2.0}
    assert world.validate("say", {"text": "  a\tb "}, "p") == {"text": "a b"}
    with pytest.raises(CommandInvalid):
        world.validate("move_to", {"x": 10**400, "y": 2}, "p")


@pytest.fixture
def tally_app(tmp_path: Any) -> Iterator[Flask]:
    os.environ.pop("WERKZEUG_RUN_MAIN", None)
    app = Flask("tally")
    app.config.update(
        TESTING=True,
        WORLDLOOP_HANDLE_SIGNALS=False,
        WORLDLOOP_STORE_URL="memory://",
        WORLDLOOP_RATE_HZ=50.0,
    )
    WorldLoop(app, world=lambda config: Tally(), json_errors="all")

    @app.post("/tally")
    @operation(
        "Send a command to the tally",
        tags=("tally",),
        responses={200: Reply("The result", None, schema={"type": "object"})},
        errors=(400, 422),
    )
    def send() -> dict[str, Any]:
        body = request.get_json()
        ticket = get_runtime().submit(body.pop("type", ""), body)
        ticket.wait(5.0)
        return ticket.to_dict()

    @app.get("/undeclared")
    def undeclared() -> str:
        return "not in the document"

    yield app
    app.extensions["worldloop"].stop()


def test_a_user_world_gets_422_and_a_documented_api(tally_app: Flask) -> None:
    client = tally_app.test_client()
    ok = client.post("/tally", json={"type": "add", "by": 2})
    assert ok.status_code == 200 and ok.json["result"] == {"n": 2.0}
    err = assert_error(client.post("/tally", json={"type": "add", "by": "two"}), 422)
    assert err["code"] == "invalid_command" and err["details"]["field"] == "by"
    assert err["details"]["errors"][0]["loc"] == ["by"]
    doc = client.get("/openapi.json").json
    assert "/tally" in doc["paths"] and "/undeclared" not in doc["paths"]
    body = doc["paths"]["/api/v1/commands"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["discriminator"]["mapping"] == {
        "add": "#/components/schemas/AddCommand",
        "scale": "#/components/schemas/ScaleCommand",
    }
    add = doc["components"]["schemas"]["AddCommand"]
    assert add["properties"]["type"]["const"] == "add" and add["description"] == "Add to the tally."
    assert "ResetCommand" not in doc["components"]["schemas"]  # internal: not for clients
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    assert list(jsonschema_rs.validator_for(OPENAPI_31).iter_errors(doc)) == []


def test_every_operation_has_a_unique_operation_id() -> None:
    ops = [op for item in document()["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in ops]
    assert len(ids) == len(set(ids)) == len(ops)
    assert {"list_entities", "submit_command", "openapi_json", "openapi_json_2"} <= set(ids)


def test_no_demo_words_in_the_library_document() -> None:
    """What the meadow adds (sheep, move_to, the leaderboard) comes from the demo's declarations."""
    bare = Flask("bare")
    register_v1(bare)
    text = str(build_document(bare)).lower()
    for word in ("sheep", "move_to", "grass", "leaderboard", "meadow"):
        assert word not in text
    demo = str(document())
    assert "sheep" in demo and "move_to" in demo and "Leaderboard" in demo


@pytest.mark.parametrize("query", ["bbox=1,2,3", "bbox=0,0,nan,1", "bbox=5,0,1,x"])
def test_bbox_is_parsed_by_one_piece_of_code(tmp_path: Any, query: str) -> None:
    app = make_app(tmp_path)
    try:
        client = app.test_client()
        answers = [client.get(f"{path}?{query}") for path in ("/api/v1/entities", "/api/v1/frame")]
        errors = [assert_error(resp, 400, "bad_request") for resp in answers]
        assert errors[0] == errors[1] and errors[0]["details"]["param"] == "bbox"
        for path in ("/api/v1/entities", "/api/v1/frame"):
            assert client.get(f"{path}?bbox=").status_code == 200  # empty: the whole world
    finally:
        app.extensions["worldloop"].stop()


def test_huge_numbers_are_422_not_500(tmp_path: Any) -> None:
    app = make_app(tmp_path)
    try:
        client = app.test_client()
        p = join(client)
        huge = b"1" + b"0" * 400
        for data in (
            b'{"type": "move_to", "x": ' + huge + b', "y": 1}',
            b'{"type": "say", "text": "hi", "entity_id": ' + huge + b"}",
        ):
            resp = client.post(
                "/api/v1/commands", data=data, content_type="application/json", headers=bearer(p)
            )
            assert_error(resp, 422, "invalid_command")
        resp = client.post(
            "/api/v1/admin/rate",
            data=b'{"rate_hz": ' + huge + b"}",
            content_type="application/json",
            headers=ADMIN,
        )
        assert_error(resp, 422, "invalid_command")
    finally:
        app.extensions["worldloop"].stop()
