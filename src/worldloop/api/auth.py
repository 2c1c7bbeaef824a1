"""Bearer-token checks for the API: the admin token comes from config or the environment."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import request

from ..config import MIN_SECRET_LENGTH
from ..state import current_settings
from .errors import Forbidden, Unauthorized


def bearer_token() -> str:
    """The request's bearer token; Unauthorized when the header is missing or malformed."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send 'Authorization: Bearer <token>'")
    return token


def admin_token() -> str | None:
    return current_settings().admin_token


def check_admin() -> None:
    """Raise unless the request carries the configured admin token."""
    expected = admin_token()
    if expected is None:  # said first, whatever the request carries: nothing to guess
        raise Forbidden(
            "the admin API is disabled: set WORLDLOOP_ADMIN_TOKEN to a random secret of at "
            f"least {MIN_SECRET_LENGTH} characters to enable it",
            details={"disabled": True, "enable": "WORLDLOOP_ADMIN_TOKEN"},
        )
    token = bearer_token()
    # constant-time: the time taken does not tell how much of a guess was right
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise Forbidden("this token is not the admin token")


@dataclass(frozen=True, slots=True)
class Security:
    """How an operation is guarded: a check that raises Unauthorized/Forbidden, and the name of
    its scheme in the OpenAPI document. ``inject``: pass the check's result to the view."""

    scheme: str
    check: Callable[[], Any]
    inject: bool = False


ADMIN = Security("adminToken", check_admin)
"""The admin bearer token (``WORLDLOOP_ADMIN_TOKEN``)."""
