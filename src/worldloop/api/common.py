"""Request helpers shared by the v1 blueprints: JSON bodies, query parsing, player auth, limits."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from flask import current_app, request

from ..runtime import WorldRuntime
from ..state import current_settings, get_runtime
from .auth import bearer_token
from .errors import BadRequest, Unauthorized, Unsupported
from .protocols import PlayerWorld
from .ratelimit import RateLimiter


def json_object() -> dict[str, Any]:
    """The request body as a JSON object; BadRequest otherwise (413 comes from Werkzeug)."""
    raw = request.get_data(cache=True)
    if not raw:
        raise BadRequest("send a JSON object as the request body")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("the body is not valid JSON", details={"reason": str(exc)[:200]}) from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def query_int(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise BadRequest(f"{name} must be an integer", details={"param": name}) from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be in {lo}..{hi}", details={"param": name})
    return value


def query_float(name: str, default: float, lo: float, hi: float) -> float:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number", details={"param": name}) from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise BadRequest(f"{name} must be in {lo:g}..{hi:g}", details={"param": name})
    return value


def query_bool(name: str) -> bool:
    raw = request.args.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("1", "true", "yes", ""):
        return True
    if value in ("0", "false", "no"):
        return False
    raise BadRequest(f"{name} must be true or false", details={"param": name})


def query_bbox(name: str = "bbox") -> tuple[float, float, float, float] | None:
    """``x0,y0,x1,y1`` with x0 < x1 and y0 < y1, finite numbers; None when absent."""
    raw = request.args.get(name)
    if raw is None:
        return None
    parts = raw.split(",")
    try:
        if len(parts) != 4:
            raise ValueError
        x0, y0, x1, y1 = (float(p) for p in parts)
    except ValueError:
        raise BadRequest(f"{name} must be x0,y0,x1,y1", details={"param": name}) from None
    if not all(math.isfinite(v) and abs(v) <= 1e9 for v in (x0, y0, x1, y1)):
        raise BadRequest(f"{name} values must be finite and within ±1e9", details={"param": name})
    if not (x0 < x1 and y0 < y1):
        raise BadRequest(f"{name} needs x0 < x1 and y0 < y1", details={"param": name})
    return x0, y0, x1, y1


def player_world(rt: WorldRuntime) -> PlayerWorld:
    world = rt.world
    if not isinstance(world, PlayerWorld):
        raise Unsupported(f"world {rt.name!r} has no players or entities API")
    return world


def token_hash(token: str) -> str:
    """How tokens are stored and looked up: SHA-256 hex of the token (tokens are random)."""
    return hashlib.sha256(token.encode()).hexdigest()


def limiter(kind: str) -> RateLimiter:
    """The app's limiter for ``kind`` ('token' or 'join'), made on first use from config."""
    ext = current_app.extensions.setdefault("worldloop_limits", {})
    lim: RateLimiter | None = ext.get(kind)
    if lim is None:
        cfg = current_settings()
        if kind == "join":
            lim = RateLimiter(cfg.join_rate_limit, cfg.join_rate_burst)
        else:
            lim = RateLimiter(cfg.rate_limit, cfg.rate_burst)
        lim = ext.setdefault(kind, lim)
    return lim


def current_player() -> tuple[WorldRuntime, PlayerWorld, str]:
    """Authenticate the bearer player token against the latest snapshot; rate-limit it."""
    rt = get_runtime()
    world = player_world(rt)
    token = bearer_token()
    if len(token) > 256:
        raise Unauthorized("unknown player token")
    digest = token_hash(token)
    player_id = world.player_for_token(rt.snapshot, digest)
    if player_id is None:
        raise Unauthorized("unknown player token")
    limiter("token").hit(digest)
    return rt, world, player_id
