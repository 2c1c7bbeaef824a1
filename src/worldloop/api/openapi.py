"""The OpenAPI 3.1 document of the whole app (hand-written, checked by a schemathesis run) and a
self-contained browsable docs page (no CDN: it renders the document with a little inline JS).

``document()`` describes every route the demo app registers (REST API v1, stream and frame,
health, metrics, jobs, leaderboard, viewer, docs); a test fails when a route is missing. The
served copy keeps only the operations the serving app really routes (``document_for(app)``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app

bp = Blueprint("worldloop_openapi", __name__)

VERSION = "1.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int | tuple[int, str]) -> dict[str, Any]:
    """Error responses (the shared Error schema); ``(code, text)`` overrides the description."""
    text = {
        304: "Not modified",
        400: "Malformed request (bad JSON or query parameter)",
        401: "Missing, malformed or unknown bearer token",
        403: "The token does not allow this (not your avatar, not the admin token)",
        404: "No such resource",
        409: "The world refused the command, or the clock is in the wrong state",
        413: "Request body too large",
        422: "The command or body failed validation",
        429: "Rate limit exceeded (see Retry-After)",
        503: "The world is not running, paused for joins, or the queue is full",
    }
    out: dict[str, Any] = {}
    for item in codes:
        code, description = item if isinstance(item, tuple) else (item, text[item])
        resp = _json(_ref("Error"), description)
        if code == 429:
            resp["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
        out[str(code)] = resp
    return out


_NUM = {"type": "number"}
_INT = {"type": "integer"}
_STR = {"type": "string"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": _STR,
                    "message": _STR,
                    "details": {"type": "object"},
                },
            }
        },
    },
    "WorldSummary": {
        "type": "object",
        "required": ["world", "tick", "sim_time", "rate_hz", "paused", "running", "entity_count"],
        "properties": {
            "world": _STR,
            "tick": _INT,
            "sim_time": _NUM,
            "rate_hz": _NUM,
            "paused": {"type": "boolean"},
            "running": {"type": "boolean"},
            "entity_count": _INT,
            "creature_count": _INT,
            "player_count": _INT,
            "grass_total": _NUM,
        },
    },
    "Snapshot": {
        "type": "object",
        "required": ["world", "tick", "sim_time", "created_at", "summary", "data"],
        "properties": {
            "world": _STR,
            "tick": _INT,
            "sim_time": _NUM,
            "created_at": _NUM,
            "summary": {"type": "object"},
            "data": {"type": "object"},
        },
    },
    "Entity": {
        "type": "object",
        "required": ["id", "kind", "x", "y", "energy", "age", "player_id", "name"],
        "properties": {
            "id": _INT,
            "kind": {"type": "string", "enum": ["sheep", "avatar", "unknown"]},
            "x": _NUM,
            "y": _NUM,
            "energy": _NUM,
            "age": _INT,
            "player_id": {"type": ["string", "null"]},
            "name": {"type": ["string", "null"]},
            "tick": _INT,
        },
    },
    "EntityPage": {
        "type": "object",
        "required": ["tick", "items", "next_cursor"],
        "properties": {
            "tick": _INT,
            "items": {"type": "array", "items": _ref("Entity")},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
    "NewPlayer": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 32}},
    },
    "Player": {
        "type": "object",
        "required": ["player_id", "token", "entity_id", "name", "tick"],
        "properties": {
            "player_id": _STR,
            "token": {"type": "string", "description": "Shown once; send as a Bearer token."},
            "entity_id": _INT,
            "name": _STR,
            "tick": _INT,
        },
    },
    "Command": {
        "type": "object",
        "required": ["type"],
        "description": (
            "move_to {x, y}: walk the avatar to a point (wraps around the torus); "
            "stop: stand still; plant: regrow the grass of the avatar's cell (409 when full); "
            "say {text}: chat. entity_id is optional and must be your own avatar."
        ),
        "properties": {
            "type": {"type": "string", "enum": ["move_to", "stop", "plant", "say"]},
            "entity_id": {"type": "integer", "minimum": 1},
            "x": _NUM,
            "y": _NUM,
            "text": {"type": "string", "minLength": 1, "maxLength": 200},
        },
    },
    "CommandAccepted": {
        "type": "object",
        "required": ["command_id", "status", "tick"],
        "properties": {
            "command_id": _STR,
            "status": {"type": "string", "enum": ["queued", "applied", "rejected"]},
            "tick": _INT,
        },
    },
    "CommandStatus": {
        "type": "object",
        "required": ["command_id", "type", "status", "tick"],
        "properties": {
            "command_id": _STR,
            "type": _STR,
            "status": {"type": "string", "enum": ["queued", "applied", "rejected"]},
            "tick": {"type": ["integer", "null"]},
            "result": {},
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": ["string", "null"]},
                    "message": {"type": ["string", "null"]},
                    "details": {"type": "object"},
                },
            },
        },
    },
    "AdminStatus": {
        "type": "object",
        "required": ["world", "tick", "rate_hz", "paused", "running", "queue_depth"],
        "properties": {
            "world": _STR,
            "tick": _INT,
            "rate_hz": _NUM,
            "paused": {"type": "boolean"},
            "running": {"type": "boolean"},
            "queue_depth": _INT,
            "stepped": _INT,
        },
    },
    "Checkpoint": {
        "type": "object",
        "required": ["tick"],
        "properties": {"tick": _INT, "state_hash": _STR, "stored": {"type": "boolean"}},
    },
}

_PLAYER_AUTH: list[dict[str, list[str]]] = [{"playerToken": []}]
_ADMIN_AUTH: list[dict[str, list[str]]] = [{"adminToken": []}]

# -- stream, frame, health, metrics (issue 5), jobs (issue 6), demo extras -------------------

_INTS = {"type": "array", "items": _INT}
_NUMS = {"type": "array", "items": _NUM}
_SLOT_OR_NULL = {"anyOf": [_ref("JobSlot"), {"type": "null"}]}

SCHEMAS.update(
    {
        "LoopStats": {
            "type": "object",
            "description": "Live loop figures, read without locks when the event is sent.",
            "required": [
                "rate_hz",
                "paused",
                "running",
                "tick_duration_ms",
                "tick_lateness_ms",
                "queue_depth",
                "ticks",
                "overruns",
                "skipped",
                "errors",
            ],
            "properties": {
                "rate_hz": _NUM,
                "paused": {"type": "boolean"},
                "running": {"type": "boolean"},
                "tick_duration_ms": _NUM,
                "tick_lateness_ms": _NUM,
                "queue_depth": _INT,
                "ticks": _INT,
                "overruns": _INT,
                "skipped": _INT,
                "errors": _INT,
            },
        },
        "Frame": {
            "type": "object",
            "description": (
                "World.view_region(snapshot, bbox, limit) plus the loop's stats. Every world "
                "gives tick, sim_time and summary; the meadow adds world, bbox, grass, "
                "creatures and players."
            ),
            "required": ["stats", "tick", "sim_time", "summary"],
            "properties": {
                "stats": _ref("LoopStats"),
                "tick": _INT,
                "sim_time": _NUM,
                "summary": {"type": "object"},
                "world": {
                    "type": "object",
                    "required": ["width", "height"],
                    "properties": {"width": _NUM, "height": _NUM},
                },
                "bbox": {
                    "type": "array",
                    "items": _NUM,
                    "minItems": 4,
                    "maxItems": 4,
                    "description": "The region drawn (x0, y0, x1, y1), clipped to the world.",
                },
                "grass": {
                    "type": "object",
                    "description": "Grass levels 0..255, row-major: rows*cols cells of side cell.",
                    "required": ["cols", "rows", "cell", "x0", "y0", "levels"],
                    "properties": {
                        "cols": _INT,
                        "rows": _INT,
                        "cell": _NUM,
                        "x0": _NUM,
                        "y0": _NUM,
                        "levels": {
                            "type": "array",
                            "items": {"type": "integer", "minimum": 0, "maximum": 255},
                        },
                    },
                },
                "creatures": {
                    "type": "object",
                    "description": "Parallel arrays; at most limit creatures of total_in_view.",
                    "required": ["id", "x", "y", "energy", "total_in_view"],
                    "properties": {
                        "id": _INTS,
                        "x": _NUMS,
                        "y": _NUMS,
                        "energy": _NUMS,
                        "total_in_view": _INT,
                    },
                },
                "players": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["player_id", "name", "entity_id", "x", "y", "say"],
                        "properties": {
                            "player_id": _STR,
                            "name": _STR,
                            "entity_id": _INT,
                            "x": _NUM,
                            "y": _NUM,
                            "say": {"type": ["string", "null"]},
                        },
                    },
                },
            },
        },
        "StreamEvent": {
            "type": "object",
            "description": (
                "One server-sent event (as OpenAPI 3.0/3.1 tools read a text/event-stream "
                "schema: per event). data is JSON text: a Frame for frame events (id = tick), "
                "LoopStats for stats events, {} for the final end event."
            ),
            "required": ["event", "data"],
            "properties": {
                "event": {"type": "string", "enum": ["frame", "stats", "end"]},
                "data": {"type": "string", "contentMediaType": "application/json"},
                "id": {"type": "string", "pattern": "^[0-9]+$"},
                "retry": _INT,
            },
            "oneOf": [
                {
                    "required": ["id"],
                    "properties": {
                        "event": {"const": "frame"},
                        "data": {"contentSchema": _ref("Frame")},
                    },
                },
                {
                    "properties": {
                        "event": {"const": "stats"},
                        "data": {"contentSchema": _ref("LoopStats")},
                    }
                },
                {"properties": {"event": {"const": "end"}, "data": {"const": "{}"}}},
            ],
        },
        "Liveness": {
            "type": "object",
            "required": ["status", "pid"],
            "properties": {"status": {"const": "alive"}, "pid": _INT},
        },
        "Problem": {
            "type": "object",
            "description": (
                "A reason the world is not fully ready. Fatal codes (503): not_running, halted, "
                "loop_stalled, store_unwritable, overrunning, tick_errors; soft codes (200, "
                "degraded): system_errors, hook_errors."
            ),
            "required": ["code", "message", "fatal"],
            "properties": {"code": _STR, "message": _STR, "fatal": {"type": "boolean"}},
        },
        "Readiness": {
            "type": "object",
            "required": [
                "status",
                "ready",
                "reasons",
                "world",
                "tick",
                "paused",
                "rate_hz",
                "role",
            ],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]},
                "ready": {"type": "boolean"},
                "reasons": {"type": "array", "items": _ref("Problem")},
                "world": _STR,
                "tick": {"type": ["integer", "null"]},
                "paused": {"type": "boolean"},
                "rate_hz": _NUM,
                "role": {
                    "type": "string",
                    "description": "serve, gunicorn-worker, prefork-master, reloader-parent, ...",
                },
            },
        },
        "JobSlot": {
            "description": "A schedule slot: a tick for tick schedules, else a UTC time.",
            "oneOf": [
                {"type": "object", "required": ["tick"], "properties": {"tick": _INT}},
                {
                    "type": "object",
                    "required": ["at", "ts"],
                    "properties": {"at": {"type": "string", "format": "date-time"}, "ts": _NUM},
                },
            ],
        },
        "JobResult": {
            "type": "object",
            "required": ["status", "slot", "finished_at", "duration", "value", "error"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "error", "timeout", "rejected"]},
                "slot": {"type": ["number", "null"]},
                "finished_at": {"type": "string", "format": "date-time"},
                "duration": _NUM,
                "value": {"description": "What the job returned (small JSON, or a description)."},
                "error": {"type": ["string", "null"]},
            },
        },
        "Job": {
            "type": "object",
            "required": [
                "name",
                "kind",
                "schedule",
                "basis",
                "misfire",
                "max_concurrent",
                "timeout",
                "paused",
                "running",
                "next_run",
                "last_slot",
                "last_run",
                "last_result",
                "runs",
                "errors",
                "skipped",
                "timeouts",
            ],
            "properties": {
                "name": _STR,
                "kind": {"type": "string", "enum": ["world", "background"]},
                "schedule": {
                    "type": "string",
                    "description": "e.g. every 60s, cron '0 4 * * *' UTC",
                },
                "basis": {"type": "string", "enum": ["wall", "tick"]},
                "misfire": {"type": "string", "enum": ["run_late", "skip", "coalesce"]},
                "max_concurrent": {"type": "integer", "minimum": 1},
                "timeout": {"type": ["number", "null"]},
                "paused": {"type": "boolean"},
                "running": {"type": "integer", "minimum": 0},
                "next_run": {**_SLOT_OR_NULL, "description": "null while paused"},
                "last_slot": _SLOT_OR_NULL,
                "last_run": {"type": ["string", "null"], "format": "date-time"},
                "last_result": {"anyOf": [_ref("JobResult"), {"type": "null"}]},
                "runs": _INT,
                "errors": _INT,
                "skipped": _INT,
                "timeouts": _INT,
            },
        },
        "JobList": {
            "type": "object",
            "required": ["jobs"],
            "properties": {"jobs": {"type": "array", "items": _ref("Job")}},
        },
        "JobEnvelope": {"type": "object", "required": ["job"], "properties": {"job": _ref("Job")}},
        "JobRun": {
            "type": "object",
            "required": ["run", "job"],
            "properties": {
                "run": {
                    "type": "object",
                    "required": ["job", "queued", "command_id"],
                    "properties": {
                        "job": _STR,
                        "queued": {"type": "boolean"},
                        "command_id": {
                            "type": ["string", "null"],
                            "description": "World jobs: the journaled command; null otherwise.",
                        },
                    },
                },
                "job": _ref("Job"),
            },
        },
        "Leaderboard": {
            "type": "object",
            "required": ["world", "tick", "sim_time", "slot", "entries"],
            "properties": {
                "world": _STR,
                "tick": _INT,
                "sim_time": _NUM,
                "slot": {"type": ["number", "null"], "description": "null for a manual run"},
                "entries": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["rank", "entity_id", "kind", "score"],
                        "properties": {
                            "rank": {"type": "integer", "minimum": 1},
                            "entity_id": _INT,
                            "kind": {"type": "string", "enum": ["sheep", "avatar"]},
                            "score": _NUM,
                        },
                    },
                },
            },
        },
    }
)

_BBOX_PARAM = {
    "name": "bbox",
    "in": "query",
    "schema": _STR,
    "description": (
        "x0,y0,x1,y1 in world units (x0<x1, y0<y1, each within ±1e9); empty or absent: "
        "the whole world."
    ),
}
_LIMIT_PARAM = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 0, "maximum": 20000},
    "description": (
        "At most this many creatures (a deterministic subsample; creatures.total_in_view says "
        "how many are in view). Default 2000 (WORLDLOOP_STREAM_DEFAULT_LIMIT), maximum 20000 "
        "(WORLDLOOP_STREAM_MAX_LIMIT)."
    ),
}
_HZ_PARAM = {
    "name": "hz",
    "in": "query",
    "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
    "description": "At most this many frames a second (default: every published tick).",
}
_JOB_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
    "description": "The job's name (the demo registers leaderboard and reseed-grass).",
    "examples": {
        "leaderboard": {"value": "leaderboard"},
        "reseed-grass": {"value": "reseed-grass"},
    },
}
_NO_JOB = (404, "No job of that name")
_NO_CACHE = {"Cache-Control": {"schema": _STR}}


def _job_op(summary: str, ok: dict[str, Any], *errors: int | tuple[int, str]) -> dict[str, Any]:
    """An admin jobs operation; those that can answer 404 (no such job) take the job name."""
    op: dict[str, Any] = {
        "tags": ["jobs"],
        "summary": summary,
        "security": _ADMIN_AUTH,
        "responses": {**ok, **_errors(401, 403, *errors)},
    }
    if _NO_JOB in errors:
        op["parameters"] = [_JOB_NAME]
    return op


def _page(summary: str, tag: str, description: str) -> dict[str, Any]:
    return {
        "get": {
            "tags": [tag],
            "summary": summary,
            "responses": {
                "200": {
                    "description": description,
                    "content": {"text/html": {"schema": _STR}},
                }
            },
        }
    }


_JOBS_PATHS: dict[str, Any] = {
    "/api/v1/admin/jobs": {
        "get": _job_op(
            "Every job: schedule, next and last run, last result, counters",
            {"200": _json(_ref("JobList"), "The jobs in registration order")},
        )
    },
    "/api/v1/admin/jobs/{name}": {
        "get": _job_op("One job", {"200": _json(_ref("JobEnvelope"), "The job")}, _NO_JOB),
    },
    "/api/v1/admin/jobs/{name}/pause": {
        "post": _job_op(
            "Stop scheduling a job (runs in flight finish; missed slots are skipped)",
            {"200": _json(_ref("JobEnvelope"), "The job, paused")},
            _NO_JOB,
        ),
    },
    "/api/v1/admin/jobs/{name}/resume": {
        "post": _job_op(
            "Schedule a job again from now on",
            {"200": _json(_ref("JobEnvelope"), "The job, resumed")},
            _NO_JOB,
        ),
    },
    "/api/v1/admin/jobs/{name}/run": {
        "post": _job_op(
            "Run a job once now, off schedule (world jobs at the next tick)",
            {"202": _json(_ref("JobRun"), "Accepted: the run and the job's status")},
            _NO_JOB,
            (409, "The job already runs max_concurrent times (job_busy)"),
            (503, "The world is not running in this process, or the command queue is full"),
        ),
    },
}

_OBSERVE_PATHS: dict[str, Any] = {
    "/api/v1/stream": {
        "get": {
            "tags": ["viewer"],
            "summary": "Live frames as server-sent events",
            "description": (
                "Starts with `retry: 1000`, then a `frame` event per new snapshot (id = tick, "
                "data = Frame JSON; at most hz a second), a `stats` event (LoopStats JSON) "
                "when no new tick came for about a second (e.g. paused), and `end` (data {}) "
                "when the world stops or the stream reaches WORLDLOOP_STREAM_MAX_SECONDS "
                "(10 s by default on one-request-per-worker servers). Needs a threaded "
                "server; WORLDLOOP_STREAM_MAX_CLIENTS streams per process."
            ),
            "parameters": [_HZ_PARAM, _BBOX_PARAM, _LIMIT_PARAM],
            "responses": {
                "200": {
                    "description": "The event stream; the schema describes one event",
                    "headers": _NO_CACHE,
                    "content": {"text/event-stream": {"schema": _ref("StreamEvent")}},
                },
                **_errors(
                    (400, "A malformed or out-of-range parameter (details.param names it)"),
                    (
                        503,
                        "The world does not run in this process, or every stream slot is taken "
                        "(too_many_streams)",
                    ),
                ),
            },
        }
    },
    "/api/v1/frame": {
        "get": {
            "tags": ["viewer"],
            "summary": "One frame of the latest snapshot (the stream's data, once)",
            "parameters": [_BBOX_PARAM, _LIMIT_PARAM],
            "responses": {
                "200": {
                    **_json(_ref("Frame"), "The frame"),
                    "headers": {"ETag": {"schema": _STR}, **_NO_CACHE},
                },
                **_errors(
                    (400, "A malformed or out-of-range parameter (details.param names it)"),
                    (503, "No snapshot published yet"),
                ),
            },
        }
    },
    "/healthz": {
        "get": {
            "tags": ["health"],
            "summary": "Liveness: the process answers (never touches the world)",
            "responses": {"200": _json(_ref("Liveness"), "Alive")},
        }
    },
    "/readyz": {
        "get": {
            "tags": ["health"],
            "summary": "Readiness: the world is served here, ticking (or paused), store writable",
            "responses": {
                "200": _json(_ref("Readiness"), "Ready: status ok, or degraded with soft reasons"),
                "503": _json(
                    _ref("Readiness"), "Not ready: status unavailable, fatal reasons listed"
                ),
            },
        }
    },
    "/metrics": {
        "get": {
            "tags": ["health"],
            "summary": "Prometheus metrics (text exposition format)",
            "responses": {
                "200": {
                    "description": "Loop, command, store, stream, job and HTTP metrics",
                    "content": {"text/plain": {"schema": _STR}},
                }
            },
        }
    },
    "/": _page("The live viewer (HTML; its static files are under /viewer/)", "viewer", "Page"),
}

_DEMO_PATHS: dict[str, Any] = {
    "/api/v1/leaderboard": {
        "get": {
            "tags": ["world"],
            "summary": "The best-fed creatures, as the leaderboard job last wrote them",
            "responses": {
                "200": _json(_ref("Leaderboard"), "The last leaderboard"),
                **_errors(
                    (404, "No leaderboard yet: the job has not run"),
                    (503, "The leaderboard file is unreadable"),
                ),
            },
        }
    },
}

_DOC_BODY = {
    "type": "object",
    "required": ["openapi", "info", "paths"],
    "properties": {"openapi": _STR, "info": {"type": "object"}, "paths": {"type": "object"}},
}
_DOCS_PATHS: dict[str, Any] = {
    path: {
        "get": {
            "tags": ["docs"],
            "summary": "This OpenAPI document (the operations this app routes)",
            "responses": {"200": _json(_DOC_BODY, "The document")},
        }
    }
    for path in ("/openapi.json", "/api/v1/openapi.json")
} | {path: _page("Browsable API docs", "docs", "Docs page") for path in ("/docs", "/api/v1/docs")}


def _admin_op(
    summary: str,
    body: dict[str, Any] | None = None,
    errors: tuple[int, ...] = (400, 401, 403, 409, 413, 422, 503),
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": ["admin"],
        "summary": summary,
        "security": _ADMIN_AUTH,
        "responses": {
            "200": _json(_ref("AdminStatus"), "The clock's state afterwards"),
            **_errors(*errors),
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def document() -> dict[str, Any]:
    """The whole OpenAPI document (built fresh: it is small)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "worldloop REST API",
            "version": VERSION,
            "description": (
                "A living world on a fixed clock: read immutable snapshots, send commands that "
                "the loop applies at the next tick. Errors are always "
                '{"error": {"code", "message", "details"}}.'
            ),
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "playerToken": {"type": "http", "scheme": "bearer"},
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
        },
        "paths": {
            "/api/v1/world": {
                "get": {
                    "tags": ["world"],
                    "summary": "World summary (latest snapshot)",
                    "responses": {
                        "200": _json(_ref("WorldSummary"), "Summary"),
                        **_errors(503),
                    },
                }
            },
            "/api/v1/world/snapshot": {
                "get": {
                    "tags": ["world"],
                    "summary": "The whole published state; ETag is the tick; long-poll",
                    "parameters": [
                        {
                            "name": "after_tick",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": -1},
                            "description": "Wait for a snapshot newer than this tick.",
                        },
                        {
                            "name": "timeout",
                            "in": "query",
                            "schema": {"type": "number", "minimum": 0, "maximum": 30},
                            "description": "Longest wait in seconds (bounded by config).",
                        },
                        {"name": "If-None-Match", "in": "header", "schema": _STR},
                    ],
                    "responses": {
                        "200": {
                            **_json(_ref("Snapshot"), "The snapshot"),
                            "headers": {"ETag": {"schema": _STR}},
                        },
                        "304": {"description": "Unchanged since the ETag sent"},
                        **_errors(400, 503),
                    },
                }
            },
            "/api/v1/entities": {
                "get": {
                    "tags": ["world"],
                    "summary": "Entities in a bounding box, by id, paged",
                    "parameters": [
                        {
                            "name": "bbox",
                            "in": "query",
                            "schema": _STR,
                            "description": "x0,y0,x1,y1 in world units (x0<x1, y0<y1).",
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {"name": "cursor", "in": "query", "schema": _STR},
                    ],
                    "responses": {
                        "200": _json(_ref("EntityPage"), "A page of entities"),
                        **_errors(400, 404, 503),
                    },
                }
            },
            "/api/v1/entities/{entity_id}": {
                "get": {
                    "tags": ["world"],
                    "summary": "One entity",
                    "parameters": [
                        {
                            "name": "entity_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 0},
                        }
                    ],
                    "responses": {
                        "200": _json(_ref("Entity"), "The entity"),
                        **_errors(404, 503),
                    },
                }
            },
            "/api/v1/players": {
                "post": {
                    "tags": ["players"],
                    "summary": "Join as a player: returns the token once",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("NewPlayer")}},
                    },
                    "responses": {
                        "201": _json(_ref("Player"), "The new player and its avatar"),
                        **_errors(400, 404, 409, 413, 422, 429, 503),
                    },
                }
            },
            "/api/v1/commands": {
                "post": {
                    "tags": ["commands"],
                    "summary": "Send a command for your avatar",
                    "security": _PLAYER_AUTH,
                    "parameters": [
                        {
                            "name": "wait",
                            "in": "query",
                            "schema": {"type": "boolean"},
                            "description": "Wait until applied: 200 with the result or a 4xx.",
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Command")}},
                    },
                    "responses": {
                        "200": _json(_ref("CommandStatus"), "Applied (with ?wait=true)"),
                        "202": _json(_ref("CommandAccepted"), "Queued for the next tick"),
                        **_errors(400, 401, 403, 404, 409, 413, 422, 429, 503),
                    },
                }
            },
            "/api/v1/commands/{command_id}": {
                "get": {
                    "tags": ["commands"],
                    "summary": "A command's status and result",
                    "security": _PLAYER_AUTH,
                    "parameters": [
                        {"name": "command_id", "in": "path", "required": True, "schema": _STR}
                    ],
                    "responses": {
                        "200": _json(_ref("CommandStatus"), "Status"),
                        **_errors(401, 403, 404, 429, 503),
                    },
                }
            },
            "/api/v1/admin/status": {
                "get": {
                    "tags": ["admin"],
                    "summary": "Clock state",
                    "security": _ADMIN_AUTH,
                    "responses": {
                        "200": _json(_ref("AdminStatus"), "Clock state"),
                        **_errors(401, 403, 503),
                    },
                }
            },
            "/api/v1/admin/pause": {
                "post": _admin_op("Pause the clock", errors=(401, 403, 409, 503))
            },
            "/api/v1/admin/resume": {
                "post": _admin_op("Resume the clock", errors=(401, 403, 409, 503))
            },
            "/api/v1/admin/step": {
                "post": _admin_op(
                    "Run n ticks while paused",
                    {
                        "type": "object",
                        "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    },
                )
            },
            "/api/v1/admin/rate": {
                "post": _admin_op(
                    "Set the tick rate",
                    {
                        "type": "object",
                        "required": ["rate_hz"],
                        "properties": {
                            "rate_hz": {"type": "number", "minimum": 0.01, "maximum": 1000}
                        },
                    },
                )
            },
            "/api/v1/admin/snapshot": {
                "post": {
                    "tags": ["admin"],
                    "summary": "Take a snapshot of the full state now (hash, and store it)",
                    "security": _ADMIN_AUTH,
                    "responses": {
                        "200": _json(_ref("Checkpoint"), "Tick and state hash"),
                        **_errors(401, 403, 409, 503),
                    },
                }
            },
            **_JOBS_PATHS,
            **_OBSERVE_PATHS,
            **_DEMO_PATHS,
            **_DOCS_PATHS,
        },
    }


def openapi_path(rule: str) -> str:
    """A Werkzeug rule as an OpenAPI path: ``/a/<int:id>`` -> ``/a/{id}``."""
    return _CONVERTER.sub(r"{\1}", rule)


_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def app_operations(app: Flask) -> Iterator[tuple[str, str]]:
    """(OpenAPI path, lower-case method) of every route of ``app``, static files excepted."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield openapi_path(rule.rule), method.lower()


def document_for(app: Flask) -> dict[str, Any]:
    """``document()`` narrowed to the operations ``app`` routes (an app may skip some parts)."""
    doc = document()
    routed = set(app_operations(app))
    paths: dict[str, Any] = {}
    for path, item in doc["paths"].items():
        kept = {method: op for method, op in item.items() if (path, method) in routed}
        if kept:
            paths[path] = kept
    doc["paths"] = paths
    return doc


@bp.get("/openapi.json")
@bp.get("/api/v1/openapi.json")
def openapi_json() -> Response:
    # not jsonify: it sorts keys, and the paths read best in the order they are declared
    return Response(json.dumps(document_for(current_app)), mimetype="application/json")


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>worldloop API v1</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.5rem}.op{border:1px solid #ddd;border-radius:6px;margin:.6rem 0;padding:.5rem .8rem}
.m{display:inline-block;min-width:4rem;font-weight:700;text-transform:uppercase}
.get{color:#07f}.post{color:#080}code,pre{background:#f5f5f5;padding:.1rem .3rem;border-radius:3px}
pre{padding:.5rem;overflow:auto;font-size:13px}small{color:#666}
</style></head><body>
<h1>worldloop REST API v1</h1>
<p>The machine-readable document is at <a href="/openapi.json">/openapi.json</a>.</p>
<div id="ops">Loading&hellip;</div>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const el = document.getElementById('ops'); el.textContent = '';
  const p = document.createElement('p'); p.textContent = doc.info.description; el.append(p);
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const d = document.createElement('details'); d.className = 'op';
      const s = document.createElement('summary');
      s.innerHTML = `<span class="m ${method}">${method}</span> <code></code> <small></small>`;
      s.querySelector('code').textContent = path;
      s.querySelector('small').textContent = op.summary || '';
      d.append(s);
      const pre = document.createElement('pre');
      pre.textContent = JSON.stringify({parameters: op.parameters, security: op.security,
        requestBody: op.requestBody, responses: op.responses}, null, 2);
      d.append(pre); el.append(d);
    }
  }
  const sch = document.createElement('details'); sch.className = 'op';
  sch.innerHTML = '<summary><b>Schemas</b></summary><pre></pre>';
  sch.querySelector('pre').textContent = JSON.stringify(doc.components.schemas, null, 2);
  el.append(sch);
});
</script></body></html>
"""


@bp.get("/docs")
@bp.get("/api/v1/docs")
def docs() -> Response:
    return Response(DOCS_HTML, mimetype="text/html")
