"""Request helpers shared by the v1 blueprints: JSON bodies, player auth, limits."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, NamedTuple, cast
from urllib.parse import urlencode
from weakref import WeakSet

from flask import current_app, request
from werkzeug.http import unquote_etag

from ..bus import deferred
from ..bus.local import LocalBus
from ..errors import ClockStateError, WorldNotRunning
from ..lease.redis import redis_url_options
from ..runtime import WorldRuntime
from ..state import current_settings, get_runtime
from .auth import Security, bearer_token
from .errors import BadRequest, Unauthorized, Unsupported
from .protocols import PlayerWorld
from .ratelimit import Limiter, open_limiter


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


def refuse_while_paused(rt: WorldRuntime, action: str) -> None:
    """A paused world applies nothing until an admin resumes it: ``action`` is refused at once
    with 409 clock_state (retrying soon does not help) rather than waiting for a tick that does
    not come and being applied on resume after the client was told it failed. A halted world
    (its journal failed) is a 503 instead: retrying does help once the store is back."""
    if not rt.stats().paused:
        return
    halted = rt.degraded
    if halted:
        raise WorldNotRunning(f"the world halted: {halted}")
    raise ClockStateError(f"the world is paused; {action} when it resumes")


_PLAYER_HOOKS = tuple(name for name in vars(PlayerWorld) if not name.startswith("_"))
_PLAYER_CLASSES: WeakSet[type] = WeakSet()
"""World classes known to implement PlayerWorld: every hook is on the class itself, so each of
their instances does. ``isinstance`` against a runtime-checkable protocol looks up each member
on every call, a cost on every entity and player request; checked once per class instead."""


def player_world(rt: WorldRuntime) -> PlayerWorld:
    world = rt.world
    cls = type(world)
    if cls in _PLAYER_CLASSES:
        return cast(PlayerWorld, world)
    if not isinstance(world, PlayerWorld):
        raise Unsupported(f"world {rt.name!r} has no players or entities API")
    if all(callable(getattr(cls, name, None)) for name in _PLAYER_HOOKS):
        _PLAYER_CLASSES.add(cls)
    return world


def token_hash(token: str) -> str:
    """How tokens are stored and looked up: SHA-256 hex of the token (tokens are random)."""
    return hashlib.sha256(token.encode()).hexdigest()


def limiter_url() -> str:
    """Where this app's rate limits live: WORLDLOOP_RATELIMIT_URL, else the Redis mode's Redis
    (under its key prefix) so a limit holds for the deployment, else this process's memory."""
    cfg = current_settings()
    if cfg.ratelimit_url:
        return cfg.ratelimit_url
    if cfg.redis_url:
        base, opts = redis_url_options(cfg.redis_url)
        prefix = opts.get("prefix", cfg.redis_prefix)
        return f"{base}{'&' if '?' in base else '?'}{urlencode({'prefix': prefix})}"
    return "memory://"


def limiter(kind: str) -> Limiter:
    """The app's limiter for ``kind`` ('token', 'join' or 'world_create'), made on first use
    from config."""
    ext = current_app.extensions.setdefault("worldloop_limits", {})
    lim: Limiter | None = ext.get(kind)
    if lim is None:
        cfg = current_settings()
        rate, burst = {
            "join": (cfg.join_rate_limit, cfg.join_rate_burst),
            "world_create": (cfg.world_create_rate, cfg.world_create_burst),
        }.get(kind, (cfg.rate_limit, cfg.rate_burst))
        made = open_limiter(limiter_url(), kind, rate, burst, max_bytes=cfg.rate_limit_bytes)
        lim = ext.setdefault(kind, made)
    return lim


class AuthedPlayer(NamedTuple):
    """The authenticated player of a request, with its world."""

    rt: WorldRuntime
    world: PlayerWorld
    player_id: str


def current_player() -> AuthedPlayer:
    """Authenticate the bearer player token against the latest snapshot; rate-limit it."""
    rt = get_runtime()
    world = player_world(rt)
    token = bearer_token()
    if len(token) > 256:
        raise Unauthorized("unknown player token")
    digest = token_hash(token)
    player_id = world.player_for_token(rt.snapshot, digest)
    if player_id is None:
        player_id = _catch_up(rt, world, digest)
    if player_id is None:
        raise Unauthorized("unknown player token")
    limiter("token").hit(digest)
    return AuthedPlayer(rt, world, player_id)


CATCH_UP_SNAPSHOTS = 3
CATCH_UP_SECONDS = 0.5


def _catch_up(rt: WorldRuntime, world: PlayerWorld, digest: str) -> str | None:
    """The player of a token this worker's snapshot does not know yet, once a newer snapshot
    does: with several workers (the Redis mode, the runner process) a join acknowledged by one
    worker reaches the others' snapshots a moment later, and the client's next request may
    come to one of them first. At most ``CATCH_UP_SNAPSHOTS`` newer snapshots or
    ``CATCH_UP_SECONDS``; never with the in-process bus, whose snapshot is the world's own."""
    if isinstance(rt.bus, LocalBus):
        return None
    later = deferred.current()
    if later is not None and later.inline:  # on the gateway's event loop: asked from a thread
        raise deferred.WouldBlock
    deadline = time.monotonic() + CATCH_UP_SECONDS
    seen = rt.snapshot.tick
    for _ in range(CATCH_UP_SNAPSHOTS):
        left = deadline - time.monotonic()
        snap = rt.wait_after(seen, left) if left > 0 else None
        if snap is None or snap.tick <= seen:
            return None
        found = world.player_for_token(snap, digest)
        if found is not None:
            return found
        seen = snap.tick
    return None


PLAYER = Security("playerToken", current_player, inject=True)
"""A player's bearer token (from POST /players); the view gets the AuthedPlayer as ``auth``."""


def not_modified(etag: str) -> bool:
    """Whether the request's ``If-None-Match`` matches ``etag`` (a quoted tag), as Werkzeug
    parses it: a list of tags, weak ones (``W/``) compared weakly, and ``*``."""
    tag, _weak = unquote_etag(etag)
    return tag is not None and request.if_none_match.contains_weak(tag)
