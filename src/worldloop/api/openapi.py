"""The OpenAPI 3.1 document of REST API v1 (hand-written, checked by a schemathesis run) and a
self-contained browsable docs page (no CDN: it renders the document with a little inline JS).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response

bp = Blueprint("worldloop_openapi", __name__)

VERSION = "1.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
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
    for code in codes:
        resp = _json(_ref("Error"), text[code])
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


def _admin_op(summary: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": ["admin"],
        "summary": summary,
        "security": _ADMIN_AUTH,
        "responses": {
            "200": _json(_ref("AdminStatus"), "The clock's state afterwards"),
            **_errors(400, 401, 403, 409, 413, 422, 503),
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
            "/api/v1/admin/pause": {"post": _admin_op("Pause the clock")},
            "/api/v1/admin/resume": {"post": _admin_op("Resume the clock")},
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
                            "rate_hz": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000}
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
        },
    }


@bp.get("/openapi.json")
@bp.get("/api/v1/openapi.json")
def openapi_json() -> Response:
    # not jsonify: it sorts keys, and the paths read best in the order they are declared
    return Response(json.dumps(document()), mimetype="application/json")


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
