"""Every API error is JSON ``{"error": {"code", "message", "details"}}`` with the right status."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from pydantic import BaseModel
from werkzeug.exceptions import HTTPException

from ..errors import WorldLoopError

log = logging.getLogger("worldloop.api")


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class Error(BaseModel):
    """Every error: a stable code, a message for people, and details for programs."""

    error: ErrorInfo


def api_error(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> Response:
    resp = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    resp.status_code = status
    return resp


def register_error_handlers(app: Flask) -> None:
    """Map library errors, HTTP errors and anything unexpected to JSON (never a stack trace)."""

    @app.errorhandler(WorldLoopError)
    def _worldloop_error(exc: WorldLoopError) -> Response:
        resp = api_error(exc.status, exc.code, exc.message, exc.details)
        for name, value in getattr(exc, "headers", {}).items():
            resp.headers[name] = value
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        resp = api_error(exc.code or 500, code, exc.description or exc.name or "error")
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            resp.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error in request")
        return api_error(500, "internal_error", "internal server error")
