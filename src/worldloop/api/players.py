"""POST /api/v1/players: join the world as an avatar; the token is shown once, kept hashed.

No avatar is ever left without someone holding its token: a join that is not applied within
the wait answers 202 *with* the token (it works once the avatar exists), and a join sent with
an ``Idempotency-Key`` can be retried (after a timeout, a dropped connection, a 503 or a
restart) to get the same player and token back. For keyed joins the player id and token are
derived from the key with the server's secret (HMAC), so a retry can show the token again
although only its hash is kept.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import os
import secrets
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Blueprint, current_app, request
from pydantic import BaseModel, ConfigDict, Field

from ..commands import CommandTicket, IdempotencyKey
from ..errors import CommandInvalid, StoreError, status_of
from ..files import private_fd
from ..state import current_settings, get_runtime
from .common import limiter, player_world, refuse_while_paused, token_hash
from .declare import Reply, operation
from .errors import JoinFailed, api_error
from .idempotency import document_key, request_key

if TYPE_CHECKING:
    from .openapi import DocContext

bp = Blueprint("worldloop_players", __name__, url_prefix="/api/v1")

SECRET_FILE = "worldloop-secret"
"""Instance file holding the key that derives keyed joins' tokens when the app has no
``SECRET_KEY`` (made once, 0600, shared by every worker of the host)."""


class NewPlayer(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str = Field(description="The avatar's name; the world checks it (422 names the field).")


def _document_join(ctx: DocContext, op: dict[str, Any]) -> None:
    """The Idempotency-Key header, and ``name`` as the world's ``join`` command declares it
    (its length and pattern), so a client that follows the document is not refused."""
    document_key(ctx, op)
    join = ctx.world.internal_commands.get("join") if ctx.world is not None else None
    declared = join.model_json_schema(mode="validation") if join is not None else {}
    name = declared.get("properties", {}).get("name")
    if isinstance(name, dict) and "$ref" not in name:
        base = NewPlayer.model_json_schema(mode="validation")["properties"]["name"]
        ctx.annotate("NewPlayer", properties={"name": {**name, "title": base["title"]}})


class Player(BaseModel):
    player_id: str
    token: str = Field(description="Shown once; send as a Bearer token.")
    entity_id: int
    name: str
    tick: int


class PendingPlayer(BaseModel):
    player_id: str
    token: str = Field(description="Yours already: it works once the avatar exists.")
    name: str
    command_id: str
    status: str = Field(description="`queued`: not applied within the wait.")


@bp.post("/players")
@operation(
    "Join as a player: returns the token once",
    tags=("players",),
    body=NewPlayer,
    amend=_document_join,
    responses={
        201: Reply("The new player and its avatar", Player),
        202: Reply("Not applied within the wait: the token, usable once it is", PendingPlayer),
    },
    errors=(400, 404, (409, "The world refused the join, or it is paused"), 413, 422, 429, 503),
)
def create_player(body: NewPlayer) -> Any:
    rt = get_runtime()
    world = player_world(rt)
    limiter("join").hit(f"ip:{request.remote_addr}")
    key = request_key(f"join:{request.remote_addr}", body)
    if key is not None:
        first = rt.keyed(key)
        if first is not None:  # a retry: the first join's outcome, its player and token
            player_id, token = _keyed_player(key)
            return _reply(first, player_id, token)
    refuse_while_paused(rt, "players can join")
    if key is None:
        player_id, token = uuid.uuid4().hex, secrets.token_urlsafe(32)
    else:
        player_id, token = _keyed_player(key)
    type_, payload = world.join_command(player_id, body.name, token_hash(token))
    return _reply(rt.submit(type_, payload, key=key), player_id, token)


def _reply(ticket: CommandTicket, player_id: str, token: str) -> Any:
    """201 with the player once applied; 202 with the token while queued; the error else."""
    expected = ticket.command.payload.get("token_hash")
    if expected is not None and not hmac.compare_digest(str(expected), token_hash(token)):
        raise JoinFailed(
            "this join's token cannot be shown again: the server secret changed since",
            details={"command_id": ticket.id},
        )
    name = ticket.command.payload.get("name")
    if not ticket.wait(current_settings().command_wait):
        pending = {
            "player_id": player_id,
            "token": token,
            "name": name,
            "command_id": ticket.id,
            "status": ticket.status.value,
        }
        return pending, 202, {"Cache-Control": "no-store"}
    outcome = ticket.outcome
    if outcome is None or not outcome.ok:
        code = outcome.error_code if outcome is not None else None
        message = (outcome.error_message if outcome else None) or "join failed"
        details = dict(outcome.error_details or {}) if outcome else {}
        if code == CommandInvalid.code:
            raise CommandInvalid(message, details=details)
        if code is not None and status_of(code, 409) == 503:  # store failing, world stopped
            details["command_id"] = ticket.id
            return api_error(503, code, message, details, StoreError.retry_after)
        raise JoinFailed(message, details=details)
    result = outcome.result
    out = {
        "player_id": player_id,
        "token": token,
        "entity_id": int(result["entity_id"]),
        "name": name,
        "tick": ticket.tick,
    }
    return (
        out,
        201,
        {"Cache-Control": "no-store", "Location": f"/api/v1/entities/{out['entity_id']}"},
    )


def _keyed_player(key: IdempotencyKey) -> tuple[str, str]:
    """The player id and token of a keyed join: HMACs of the key's scope, so every retry (in
    any worker, after a restart) derives the same ones and the journal need not keep a token."""
    secret = _secret()
    pid = hmac.new(secret, b"player\0" + key.scope.encode(), hashlib.sha256).hexdigest()[:32]
    raw = hmac.new(secret, b"token\0" + key.scope.encode(), hashlib.sha256).digest()
    return pid, base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _secret() -> bytes:
    """The app's SECRET_KEY, else the instance's own secret file (made once, 0600)."""
    configured = current_app.config.get("SECRET_KEY")
    if configured:
        return configured.encode() if isinstance(configured, str) else bytes(configured)
    cache: dict[str, bytes] = current_app.extensions.setdefault("worldloop_secret", {})
    if "key" not in cache:
        path = Path(current_app.instance_path) / SECRET_FILE
        fd = private_fd(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # two workers starting at once agree on one secret
            data = os.pread(fd, 256, 0).strip()
            if not data:
                data = secrets.token_hex(32).encode()
                os.pwrite(fd, data, 0)
                os.fsync(fd)
        finally:
            os.close(fd)
        cache["key"] = data
    return cache["key"]
