"""A schemathesis run against the OpenAPI document of the whole demo app: no 5xx, every response
(server-sent events included, event by event) fits the schema. Two runs: one with real player
and admin credentials, one with whatever credentials schemathesis makes up (401/403 paths).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis import checks as st_checks

from worldloop.demo import create_app
from worldloop.demo.docs import document
from worldloop.demo.jobs import LEADERBOARD_FILE

from .support import wait_for

ADMIN_TOKEN = "fuzz-admin-token-0123"
RATE_HZ = 50.0
STREAM_SECONDS = 0.3
"""Server-side cap on each fuzzed stream (WORLDLOOP_STREAM_MAX_SECONDS): streams end with an
``end`` event, so the stream is fuzzed like any endpoint and every case stays short."""


def _sse_events(raw: bytes) -> list[dict[str, str]]:
    """Events of a text/event-stream body that carry data (comments and retry lines skipped)."""
    events: list[dict[str, str]] = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        data: list[str] = []
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name in ("event", "id"):
                fields[name] = value
        if data:
            events.append(
                {"event": fields.get("event", "message"), "data": "\n".join(data), **fields}
            )
    return events


def _data_validators(doc: dict[str, Any]) -> dict[str, Any]:
    """Per event type, a validator for its JSON data (the document's ``contentSchema``, which
    JSON Schema treats as an annotation only, so schemathesis does not check it)."""
    variants = doc["components"]["schemas"]["StreamEvent"]["oneOf"]
    out: dict[str, Any] = {}
    for variant in variants:
        props = variant["properties"]
        content = props["data"].get("contentSchema", {"const": {}})
        root = {**content, "components": doc["components"]}
        out[props["event"]["const"]] = jsonschema_rs.validator_for(root)
    return out


def check_sse_event_data(doc: dict[str, Any]) -> Callable[..., None]:
    validators = _data_validators(doc)

    def sse_event_data_conformance(ctx: Any, response: Any, case: Any) -> None:
        """Every event's JSON data fits the schema its event type documents."""
        if not response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
            return
        for n, event in enumerate(_sse_events(response.content), 1):
            validator = validators.get(event["event"])
            if validator is None:
                raise AssertionError(f"event #{n}: undocumented event type {event['event']!r}")
            errors = [e.message for e in validator.iter_errors(json.loads(event["data"]))]
            if errors:
                raise AssertionError(f"event #{n} ({event['event']}) data: {errors[:3]}")

    return sse_event_data_conformance


DOC = document()


def not_a_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx, except a 503 that the operation documents: the world paused for joins, not
    served here, its queue full, every stream slot taken, or /readyz telling the truth about an
    overrunning loop on a busy machine. Such a 503 still has its body checked by its schema."""
    operation = DOC["paths"][case.operation.path].get(case.method.lower(), {})
    if response.status_code == 503 and "503" in operation.get("responses", {}):
        return None
    return st_checks.not_a_server_error(ctx, response, case)


CHECKS = [
    not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.response_headers_conformance,
    check_sse_event_data(DOC),
]


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    os.environ.pop("WERKZEUG_RUN_MAIN", None)
    app = create_app(
        {
            "TESTING": True,
            "WORLDLOOP_HANDLE_SIGNALS": False,
            "WORLDLOOP_ADMIN_TOKEN": ADMIN_TOKEN,
            "WORLDLOOP_RATE_HZ": RATE_HZ,
            "WORLDLOOP_COMMAND_WAIT": 0.5,
            "WORLDLOOP_LONG_POLL_MAX": 0.3,
            "WORLDLOOP_RATE_LIMIT": 1000.0,
            "WORLDLOOP_RATE_BURST": 1000,
            "WORLDLOOP_JOIN_RATE_LIMIT": 1000.0,
            "WORLDLOOP_JOIN_RATE_BURST": 1000,
            "WORLDLOOP_STREAM_MAX_SECONDS": STREAM_SECONDS,
            "MEADOW_ENTITIES": 200,
            "MEADOW_WIDTH": 300.0,
            "MEADOW_HEIGHT": 300.0,
        },
        instance_path=str(tmp_path_factory.mktemp("fuzz") / "instance"),
    )
    # a leaderboard exists, so GET /api/v1/leaderboard answers 200 and its body is checked too
    client = app.test_client()
    run = client.post(
        "/api/v1/admin/jobs/leaderboard/run", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert run.status_code == 202, run.json
    board = Path(app.instance_path) / LEADERBOARD_FILE
    wait_for(board.exists, 10.0, what="the leaderboard job to write its file")
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
schema = schemathesis.openapi.from_dict(DOC)
# Only operations that take credentials are worth a second run without real ones.
guarded = schemathesis.openapi.from_dict(DOC).include(tag=["admin", "jobs", "commands"])

# A deeper, randomized hunt: WORLDLOOP_FUZZ_EXAMPLES=300 WORLDLOOP_FUZZ_RANDOM=1 pytest ...
FUZZ_SETTINGS = settings(
    max_examples=int(os.environ.get("WORLDLOOP_FUZZ_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("WORLDLOOP_FUZZ_RANDOM", "") != "1",
    database=None,
)


_last_request = ["(none yet)"]


def _check_the_loop(app: Flask, case: Any, *, after: bool) -> None:
    """No request may kill the loop: its death shows later only as documented 503s, so check
    before and after every case. Before a case, a fuzzed rate is put back (as late as possible,
    so a rate that would kill the loop has done so by then) to keep the rest of the run ticking."""
    rt = app.extensions["worldloop"].runtime
    assert rt is not None
    if after:
        _last_request[0] = f"{case.method} {case.formatted_path} body={case.body!r}"
    assert rt.running, f"the world loop died; the last request was {_last_request[0]}"
    if not after and rt.stats().rate_hz != RATE_HZ:
        rt.set_rate(RATE_HZ)


@pytest.mark.slow
@schema.parametrize()
@FUZZ_SETTINGS
def test_fuzz_with_credentials(case: Any, player_token: str, fuzz_app: Flask) -> None:
    """Generated requests (valid and invalid) with the real admin or player token."""
    _check_the_loop(fuzz_app, case, after=False)
    path = case.operation.path
    headers: dict[str, str] = {}
    if path.startswith("/api/v1/admin"):
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    elif path.startswith("/api/v1/commands"):
        headers["Authorization"] = f"Bearer {player_token}"
    case.call_and_validate(app=fuzz_app, headers=headers, checks=CHECKS)
    _check_the_loop(fuzz_app, case, after=True)


@pytest.mark.slow
@guarded.parametrize()
@FUZZ_SETTINGS
def test_fuzz_without_credentials(case: Any, fuzz_app: Flask) -> None:
    """The guarded operations with no or made-up tokens: 401/403 as documented, never 5xx."""
    _check_the_loop(fuzz_app, case, after=False)
    case.call_and_validate(app=fuzz_app, checks=CHECKS)
    _check_the_loop(fuzz_app, case, after=True)


def test_stream_events_fit_the_document(fuzz_app: Flask) -> None:
    """A capped stream sends frames (with ids), then ``end``; every event fits its schema."""
    resp = fuzz_app.test_client().get("/api/v1/stream?limit=50&bbox=0,0,150,150")
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    events = _sse_events(resp.data)
    kinds = [e["event"] for e in events]
    assert "frame" in kinds and kinds[-1] == "end", kinds
    event_schema = jsonschema_rs.validator_for(
        {**DOC["components"]["schemas"]["StreamEvent"], "components": DOC["components"]}
    )
    validators = _data_validators(DOC)
    for event in events:
        event_schema.validate(event)
        validators[event["event"]].validate(json.loads(event["data"]))
    frame = json.loads(next(e["data"] for e in events if e["event"] == "frame"))
    sheep = next(lay for lay in frame["layers"] if lay["kind"] == "sheep")
    assert len(sheep["id"]) <= 50 and frame["bbox"] == [0.0, 0.0, 150.0, 150.0]


def _break(doc: dict[str, Any], where: str) -> dict[str, Any]:
    broken = copy.deepcopy(doc)
    schemas = broken["components"]["schemas"]
    if where == "body":
        schemas["Liveness"]["properties"]["pid"] = {"type": "string"}
    elif where == "status":
        del broken["paths"]["/readyz"]["get"]["responses"]["503"]
        del broken["paths"]["/readyz"]["get"]["responses"]["200"]
        broken["paths"]["/readyz"]["get"]["responses"]["204"] = {"description": "wrong"}
    elif where == "content-type":
        ok = broken["paths"]["/metrics"]["get"]["responses"]["200"]
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    elif where == "sse-event":
        schemas["StreamEvent"]["properties"]["event"]["enum"] = ["frame", "stats"]
    elif where == "sse-data":
        schemas["Frame"]["required"].append("weather")
    elif where == "job":
        schemas["Job"]["properties"]["runs"] = {"type": "string"}
    return broken


@pytest.mark.parametrize(
    ("where", "path"),
    [
        ("body", "/healthz"),
        ("status", "/readyz"),
        ("content-type", "/metrics"),
        ("sse-event", "/api/v1/stream"),
        ("sse-data", "/api/v1/stream"),
        ("job", "/api/v1/admin/jobs"),
    ],
)
def test_the_checks_catch_a_broken_document(fuzz_app: Flask, where: str, path: str) -> None:
    """The fuzz checks are not vacuous: a document broken on purpose fails them, the real one
    passes for the very same request."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    # schemathesis reads at most 20 events of a stream and judges only those; at the world's
    # 50 Hz a 0.3 s stream can hold more, so the closing ``end`` event (the one the broken
    # document forbids) would sometimes go unread: streams here run at 5 frames a second.
    query = {"hz": 5} if path == "/api/v1/stream" else None
    good = schemathesis.openapi.from_dict(DOC)[path]["GET"].Case(query=query)
    good.call_and_validate(app=fuzz_app, headers=headers, checks=CHECKS)
    broken_doc = _break(DOC, where)
    broken = schemathesis.openapi.from_dict(broken_doc)[path]["GET"].Case(query=query)
    with pytest.raises(BaseExceptionGroup) as failed:  # schemathesis groups its failures
        broken.call_and_validate(
            app=fuzz_app, headers=headers, checks=[*CHECKS[:-1], check_sse_event_data(broken_doc)]
        )
    assert failed.value.exceptions
