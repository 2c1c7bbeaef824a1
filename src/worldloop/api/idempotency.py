"""The ``Idempotency-Key`` request header: exactly-once submission of commands and joins.

A client that may retry (a timeout, a dropped connection, a 503, a server restart) sends a
random key with the request; a retry with the same key gets the first request's outcome and
is never applied twice (the engine side is :class:`~worldloop.commands.IdempotencyKey`). The
key is scoped to who sends it (the player for commands, the client address for joins), so one
client's key never names another's request, and fingerprinted with the request, so a key
reused for a different request is a 422 ``idempotency_key_reused`` instead of a silent replay.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

from flask import request
from pydantic import BaseModel

from ..commands import IdempotencyKey
from .errors import BadRequest

if TYPE_CHECKING:
    from .openapi import DocContext

HEADER = "Idempotency-Key"
MIN_LENGTH = 16
MAX_LENGTH = 128
PATTERN = f"^[A-Za-z0-9_.:-]{{{MIN_LENGTH},{MAX_LENGTH}}}$"
"""A random string (a UUID fits): long enough that nobody guesses another client's key."""

_VALID = re.compile(PATTERN)

DESCRIPTION = (
    "Send a fresh random key (e.g. a UUID) to make a retry safe: a request repeated with the "
    "same key (after a timeout, a dropped connection, a 503 or a restart) returns the first "
    "outcome and is never applied twice; the same key with a different request is a 422 "
    "`idempotency_key_reused`. Keys are remembered for recent requests and, after that, for "
    "as long as the journal keeps the command."
)


def request_key(scope: str, body: Any) -> IdempotencyKey | None:
    """The request's key scoped to ``scope`` (who sends it), with a fingerprint of the
    request (its path and ``body``: a pydantic model is fingerprinted as its ``model_dump()``,
    made only when a key came); None without the header, BadRequest when it is malformed."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if isinstance(body, BaseModel):
        body = body.model_dump()
    if not _VALID.match(raw):
        raise BadRequest(
            f"{HEADER} must be {MIN_LENGTH}-{MAX_LENGTH} characters of A-Z a-z 0-9 _ . : -",
            details={"header": HEADER, "pattern": PATTERN},
        )
    canonical = json.dumps(
        {"path": request.path, "body": body}, sort_keys=True, separators=(",", ":")
    )
    fingerprint = hashlib.sha256(canonical.encode()).hexdigest()
    return IdempotencyKey(f"{scope}:{raw}", fingerprint)


def document_key(ctx: DocContext, op: dict[str, Any]) -> None:
    """Document the header (with the exact pattern the server enforces) on an operation."""
    op.setdefault("parameters", []).append(
        {
            "name": HEADER,
            "in": "header",
            "required": False,
            "description": DESCRIPTION,
            "schema": {
                "type": "string",
                "minLength": MIN_LENGTH,
                "maxLength": MAX_LENGTH,
                "pattern": PATTERN,
            },
        }
    )
