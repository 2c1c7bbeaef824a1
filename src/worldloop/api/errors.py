"""Errors of the HTTP layer, and the JSON envelope every API error is answered with:
``{"error": {"code", "message", "details"}}``, with the status from worldloop.errors' registry.

A 503 or 429 always carries ``Retry-After`` (the error's own ``retry_after``, else 1 s).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from flask import Flask, Response, request
from pydantic import BaseModel
from werkzeug.exceptions import HTTPException

from ..errors import WorldLoopError, register_code
from .jsonout import json_response

log = logging.getLogger("worldloop.api")

API_PREFIX = "/api/"
"""Requests under this path are worldloop's, even when no route matched them (404, 405)."""


class BadRequest(WorldLoopError, code="bad_request", status=400):
    """The request itself is malformed (not JSON, a bad query parameter)."""


class NotFound(WorldLoopError, code="not_found", status=404):
    """No such resource."""


class Unsupported(WorldLoopError, code="not_supported", status=404):
    """The running world does not offer players/entities (it lacks the PlayerWorld hooks)."""


class Unauthorized(WorldLoopError, code="unauthorized", status=401):
    """No usable credentials were sent."""

    headers = {"WWW-Authenticate": 'Bearer realm="worldloop"'}


class Forbidden(WorldLoopError, code="forbidden", status=403):
    """Credentials were sent but do not allow this action."""


class JoinFailed(WorldLoopError, code="join_failed", status=409):
    """The world refused a join (its reason is in the message)."""


class RateLimited(WorldLoopError, code="rate_limited", status=429):
    """Too many requests for this key; ``retry_after`` says when one more will be allowed."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, details={"retry_after": round(retry_after, 3)})
        self.retry_after = retry_after


class TooManyStreams(WorldLoopError, code="too_many_streams", status=503):
    """Every stream slot of this process is taken; retry later."""

    retry_after = 1.0


register_code("payload_too_large", 413)


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class Error(BaseModel):
    """Every error: a stable code, a message for people, and details for programs."""

    error: ErrorInfo


def api_error(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    retry_after: float | None = None,
    *,
    app: Flask | None = None,
) -> Response:
    """The JSON error envelope; 503 and 429 always say when to retry. ``app``: the app
    answering (default: the current app; given, no context is needed)."""
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    resp = json_response(body, app)
    resp.status_code = status
    if status in (429, 503):
        resp.headers["Retry-After"] = str(max(1, math.ceil(retry_after or 1.0)))
    return resp


def worldloop_error(exc: WorldLoopError) -> Response:
    """A WorldLoopError as its JSON envelope, status and headers."""
    resp = api_error(exc.status, exc.code, exc.message, exc.details, exc.retry_after)
    for name, value in exc.headers.items():
        resp.headers[name] = value
    return resp


def http_error(exc: HTTPException) -> Response:
    """A Werkzeug HTTP error (404, 405, 413…) as the JSON envelope."""
    code = (exc.name or "error").lower().replace(" ", "_")
    resp = api_error(exc.code or 500, code, exc.description or exc.name or "error")
    if exc.code == 405 and getattr(exc, "valid_methods", None):
        resp.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    return resp


def unexpected_error(exc: Exception) -> Response:
    log.exception("unhandled error in request")
    return api_error(500, "internal_error", "internal server error")


def is_worldloop_request() -> bool:
    """Whether the current request belongs to worldloop (its blueprints, or under /api/)."""
    blueprint = request.blueprint or ""
    return blueprint.startswith("worldloop_") or request.path.startswith(API_PREFIX)


def ensure_retry_after(resp: Response) -> Response:
    """Every 503 and 429 of worldloop's routes says when to retry, whichever path made it
    (the envelope does already; /readyz and host-built responses may not)."""
    missing = resp.status_code in (429, 503) and "Retry-After" not in resp.headers
    if missing and is_worldloop_request():
        resp.headers["Retry-After"] = "1"
    return resp


def register_worldloop_errors(app: Flask) -> None:
    """JSON for worldloop's errors wherever raised, and for HTTP errors and unexpected
    exceptions on worldloop's own routes; the host app's other pages keep their own errors."""
    app.register_error_handler(WorldLoopError, worldloop_error)
    app.after_request(ensure_retry_after)

    def scoped_http(exc: HTTPException) -> HTTPException | Response:
        return http_error(exc) if is_worldloop_request() else exc

    def scoped_unexpected(exc: Exception) -> Response:
        if is_worldloop_request():
            return unexpected_error(exc)
        raise exc

    app.register_error_handler(HTTPException, scoped_http)
    app.register_error_handler(Exception, scoped_unexpected)


def register_error_handlers(app: Flask) -> None:
    """Every error of the app as JSON (API-only servers): worldloop's, HTTP errors, and any
    unexpected exception (logged, answered as a 500 without internals)."""
    app.register_error_handler(WorldLoopError, worldloop_error)
    app.after_request(ensure_retry_after)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unexpected_error)
