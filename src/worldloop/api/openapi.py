"""The OpenAPI 3.1 document, built from the app's routes and what each one declares
(``declare.operation``: its models, responses and security), and a self-contained browsable docs
page (no CDN: it renders the document with a little inline JS).

Only declared routes are documented: a host app's own routes stay out unless it declares them
too. Component schemas come from the pydantic models (JSON Schema 2020-12, which OpenAPI 3.1
uses as is); the command body is the serving world's declared commands, and a world may refine
the schemas of what it publishes (``World.view_models``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from flask import Blueprint, Flask, Response, current_app
from pydantic import BaseModel, ConfigDict, TypeAdapter
from werkzeug.routing import Rule

from ..config import Settings
from ..world import World
from .declare import ERROR_TEXT, Operation, Reply, declared, operation
from .errors import Error
from .params import EMPTY_KEY, SETTING_KEY

bp = Blueprint("worldloop_openapi", __name__)

VERSION = "1.0.0"
REF = "#/components/schemas/{model}"
Mode = Literal["validation", "serialization"]


@dataclass(slots=True)
class DocContext:
    """What a document is built from: the app, its world's class, its jobs; and the component
    schemas gathered so far (``ref`` and ``schema_of`` add to them)."""

    app: Flask
    world: type[World] | None = None
    jobs: tuple[str, ...] = ()
    schemas: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        """The described app's worldloop settings (the defaults when it has none)."""
        settings = getattr(self.app.extensions.get("worldloop"), "settings", None)
        return settings if isinstance(settings, Settings) else Settings()

    def ref(self, model: type[BaseModel], mode: Mode = "serialization") -> dict[str, str]:
        """``model`` as a component; a ``$ref`` to it."""
        schema = model.model_json_schema(ref_template=REF, mode=mode)
        self.merge(schema.pop("$defs", {}))
        self.merge({model.__name__: schema})
        return {"$ref": REF.format(model=model.__name__)}

    def schema_of(self, tp: Any, mode: Mode = "validation") -> dict[str, Any]:
        """The schema of any type (a union, say); the models it names become components."""
        schema: dict[str, Any] = TypeAdapter(tp).json_schema(ref_template=REF, mode=mode)
        self.merge(schema.pop("$defs", {}))
        return schema

    def annotate(self, name: str, **keys: Any) -> None:
        """Add keywords a model cannot say to component ``name`` (applied once, at the end)."""
        self.notes.setdefault(name, {}).update(keys)

    def merge(self, defs: Mapping[str, Any]) -> None:
        for name, schema in defs.items():
            old = self.schemas.get(name)
            if old is not None and old != schema:
                raise ValueError(f"two different schemas are named {name!r}")
            self.schemas[name] = schema

    def refine(self, views: Mapping[str, type[BaseModel]]) -> None:
        """Add a world's fields to the generic schemas of what it publishes (same name)."""
        for name, model in views.items():
            schema = model.model_json_schema(ref_template=REF, mode="serialization")
            self.merge(schema.pop("$defs", {}))
            base = self.schemas.get(name, {})
            required = list(base.get("required", []))
            required += [r for r in schema.get("required", []) if r not in required]
            merged = {
                **base,
                **schema,
                "properties": {**base.get("properties", {}), **schema.get("properties", {})},
            }
            if required:
                merged["required"] = required
            self.schemas[name] = merged


class OpenAPIDocument(BaseModel):
    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


def build_document(
    app: Flask, *, world: type[World] | None = None, jobs: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The OpenAPI document of every declared route of ``app``."""
    ctx = DocContext(app, world, jobs)
    paths: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        op = declared(view)
        if op is None:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            obj = _operation(ctx, op, rule)
            obj["operationId"] = _unique(op.operation_id or rule.endpoint.split(".")[-1], taken)
            if op.amend is not None:
                op.amend(ctx, obj)
            paths.setdefault(openapi_path(rule.rule), {})[method.lower()] = obj
    ctx.ref(Error)
    if world is not None:
        ctx.refine(world.view_models)
    for name, keys in ctx.notes.items():
        ctx.schemas[name] = {**ctx.schemas[name], **keys}
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
            "schemas": dict(sorted(ctx.schemas.items())),
            "securitySchemes": {
                "playerToken": {"type": "http", "scheme": "bearer"},
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
        },
        "paths": paths,
    }


def _unique(name: str, taken: set[str]) -> str:
    """operationIds are unique: a view routed twice gets ``name_2`` for its second path."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    taken.add(candidate)
    return candidate


def _operation(ctx: DocContext, op: Operation, rule: Rule) -> dict[str, Any]:
    obj: dict[str, Any] = {"tags": list(op.tags), "summary": op.summary}
    if op.description:
        obj["description"] = op.description
    if op.security is not None:
        obj["security"] = [{op.security.scheme: []}]
    params = [*_path_params(ctx, rule, op.path), *_model_params(ctx, op.query, "query")]
    params += [
        {"name": name, "in": "header", "schema": {"type": "string"}, "description": text}
        for name, text in op.headers
    ]
    if params:
        obj["parameters"] = params
    if op.body is not None:
        obj["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ctx.ref(op.body, "validation")}},
        }
    responses = {str(status): _reply(ctx, r) for status, r in sorted(op.responses.items())}
    for item in op.errors:
        status, text = item if isinstance(item, tuple) else (item, ERROR_TEXT[item])
        responses[str(status)] = _reply(ctx, Reply(text, Error))
    if "world" in rule.arguments and "404" not in responses:  # /api/v1/worlds/<world>/...
        responses["404"] = _reply(ctx, Reply("No world of that name here", Error))
    for code in ("429", "503"):  # api_error and ensure_retry_after always send it
        if code in responses:
            responses[code].setdefault("headers", {})["Retry-After"] = RETRY_AFTER
    obj["responses"] = dict(sorted(responses.items()))
    return obj


RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}


def _reply(ctx: DocContext, reply: Reply) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    if reply.headers:
        out["headers"] = {name: {"schema": {"type": "string"}} for name in reply.headers}
    if reply.model is not None:
        out["content"] = {reply.media_type: {"schema": ctx.ref(reply.model)}}
    elif reply.schema is not None:
        out["content"] = {reply.media_type: {"schema": dict(reply.schema)}}
    return out


_CONVERTER = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
_PATH_TYPES: dict[str, dict[str, Any]] = {
    "int": {"type": "integer", "minimum": 0},
    "float": {"type": "number", "minimum": 0},
    "uuid": {"type": "string", "format": "uuid"},
}


def openapi_path(rule: str) -> str:
    """A Werkzeug rule as an OpenAPI path: ``/a/<int:id>`` -> ``/a/{id}``."""
    return _CONVERTER.sub(r"{\2}", rule)


def _path_params(
    ctx: DocContext, rule: Rule, model: type[BaseModel] | None
) -> list[dict[str, Any]]:
    """One parameter per rule variable, typed by its converter (or by ``model``'s field)."""
    declared_params = {p["name"]: p for p in _model_params(ctx, model, "path")}
    out = []
    for converter, name in _CONVERTER.findall(rule.rule):
        param = declared_params.get(name) or {
            "name": name,
            "in": "path",
            "schema": dict(_PATH_TYPES.get(converter, {"type": "string"})),
        }
        out.append({**param, "required": True})
    return out


def _model_params(
    ctx: DocContext, model: type[BaseModel] | None, where: str
) -> list[dict[str, Any]]:
    """A model's fields as parameters (a query string carries no null: optional is enough).
    Bounds read from settings become the app's values; an empty value that means absent is
    ``allowEmptyValue``."""
    if model is None:
        return []
    schema = _with_settings(model.model_json_schema(ref_template=REF, mode="validation"), ctx)
    ctx.merge(schema.pop("$defs", {}))
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        empty = prop.pop(EMPTY_KEY, False)
        description = prop.pop("description", None)
        variants = prop.pop("anyOf", None)
        if variants is not None:
            kept = [v for v in variants if v != {"type": "null"}]
            prop = {**(kept[0] if len(kept) == 1 else {"anyOf": kept}), **prop}
        if prop.get("default", 0) is None:
            del prop["default"]
        param: dict[str, Any] = {"name": name, "in": where, "schema": prop}
        if name in required:
            param["required"] = True
        if empty and where == "query":
            param["allowEmptyValue"] = True
        if description:
            param["description"] = description
        out.append(param)
    return out


def _with_settings(schema: Any, ctx: DocContext) -> Any:
    """``schema`` with each setting-bound marker replaced by ``maximum``: the setting's value."""
    if isinstance(schema, list):
        return [_with_settings(item, ctx) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _with_settings(v, ctx) for k, v in schema.items() if k != SETTING_KEY}
    if SETTING_KEY in schema:
        bound = getattr(ctx.settings, schema[SETTING_KEY])
        out["maximum"] = min(bound, out.get("maximum", bound))
    return out


def app_operations(app: Flask) -> Iterator[tuple[str, str]]:
    """(OpenAPI path, lower-case method) of every route of ``app``, static files excepted."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield openapi_path(rule.rule), method.lower()


def document_for(app: Flask) -> dict[str, Any]:
    """The document ``app`` serves: its declared routes, its world's commands, its jobs."""
    ext = app.extensions.get("worldloop")
    rt = getattr(ext, "runtime", None)
    world = type(rt.world) if rt is not None else None
    jobs = getattr(ext, "jobs", None)
    names = tuple(jobs.names) if jobs is not None else ()
    return build_document(app, world=world, jobs=names)


_DOC_RESPONSE = {200: Reply("The document", OpenAPIDocument)}


@bp.get("/openapi.json")
@bp.get("/api/v1/openapi.json")
@operation(
    "This OpenAPI document (the operations this app routes)",
    tags=("docs",),
    responses=_DOC_RESPONSE,
)
def openapi_json() -> Response:
    # built once per app (routes and world are fixed once it serves); not jsonify: it sorts
    # keys, and the paths read best in the order they are declared
    cache: dict[str, str] = current_app.extensions.setdefault("worldloop_openapi", {})
    text = cache.get("document")
    if text is None:
        text = cache.setdefault("document", json.dumps(document_for(current_app)))
    return Response(text, mimetype="application/json")


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
@operation(
    "Browsable API docs",
    tags=("docs",),
    responses={200: Reply("Docs page", media_type="text/html", schema={"type": "string"})},
)
def docs() -> Response:
    return Response(DOCS_HTML, mimetype="text/html")
