"""POST /api/v1/commands and GET /api/v1/commands/{id}: a player acts on its own avatar.

The body is ``{"type": ..., **payload}``; the payload is checked by the model the world
declares for that type (``World.commands``), and the document shows those models as a ``oneOf``
discriminated by ``type``, built from the serving app's world.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from flask import Blueprint, Flask, Response
from pydantic import BaseModel, ConfigDict, Field, create_model

from ..commands import CommandTicket
from ..errors import CommandInvalid, StoreError, status_of
from ..state import current_settings
from .common import PLAYER, AuthedPlayer
from .declare import Reply, operation
from .errors import Forbidden, NotFound, api_error
from .idempotency import document_key, request_key
from .jsonout import json_response
from .params import WaitQuery

if TYPE_CHECKING:
    from .openapi import DocContext

bp = Blueprint("worldloop_commands", __name__, url_prefix="/api/v1")


Status = Literal["queued", "applied", "rejected"]


class CommandBody(BaseModel):
    """A command: its ``type`` and the payload fields of that type (checked by the world)."""

    model_config = ConfigDict(strict=True, extra="allow")

    type: str


class CommandAccepted(BaseModel):
    command_id: str
    status: Status
    tick: int


class CommandError(BaseModel):
    code: str | None
    message: str | None
    details: dict[str, Any]


class CommandStatus(BaseModel):
    command_id: str
    type: str
    status: Status
    tick: int | None
    result: Any = None
    error: CommandError | None = None


def world_commands(ctx: DocContext, op: dict[str, Any]) -> None:
    """Document the body as the serving world's commands, a ``oneOf`` by ``type``."""
    declared = dict(ctx.world.commands) if ctx.world is not None else {}
    if not declared:
        return
    variants = [
        create_model(
            _camel(type_) + "Command",
            __base__=model,
            __doc__=model.__doc__,
            type=(Literal[type_], ...),  # type: ignore[arg-type]
        )
        for type_, model in declared.items()
    ]
    union: Any = variants[0] if len(variants) == 1 else Union[tuple(variants)]  # noqa: UP007
    schema = ctx.schema_of(Annotated[union, Field(discriminator="type")])
    op["requestBody"]["content"]["application/json"]["schema"] = schema


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.replace("-", "_").split("_"))


def _amend_submit(ctx: DocContext, op: dict[str, Any]) -> None:
    world_commands(ctx, op)
    document_key(ctx, op)


@bp.post("/commands")
@operation(
    "Send a command for your avatar",
    tags=("commands",),
    security=PLAYER,
    query=WaitQuery,
    body=CommandBody,
    amend=_amend_submit,
    responses={
        200: Reply("Applied (with ?wait=true)", CommandStatus),
        202: Reply("Queued for the next tick", CommandAccepted, headers=("Location",)),
    },
    errors=(
        400,
        401,
        (403, "Not your avatar"),
        404,
        409,
        413,
        422,
        429,
        503,
    ),
)
def submit_command(auth: AuthedPlayer, query: WaitQuery, body: CommandBody) -> Response:
    rt, world, player_id = auth
    allowed = list(rt.world.commands)
    if body.type not in allowed:
        raise CommandInvalid(
            "type must be one of " + ", ".join(allowed),
            details={"field": "type", "allowed": allowed},
        )
    # validated here too, so a bad payload is a 422 before its entity_id is judged
    payload = rt.world.validate(body.type, dict(body.model_extra or {}), player_id)
    eid = payload.get("entity_id")
    if isinstance(eid, int) and not isinstance(eid, bool):
        own = world.avatar_of(rt.snapshot, player_id)
        if own is not None and eid != own:
            raise Forbidden(
                "a player can act only on its own avatar",
                details={"entity_id": eid, "own_entity_id": own},
            )
    key = request_key(f"cmd:{player_id}", body)
    tick = rt.snapshot.tick
    # with a key already used, the first command's ticket (in flight or resolved) comes back;
    # the payload is the world's normalized one already (validated above): queued as it is
    ticket = rt.accept(body.type, payload, actor=player_id, key=key)
    if query.wait and ticket.wait(current_settings().command_wait):
        return resolved_response(ticket)
    if ticket.tick is not None:
        tick = ticket.tick
    resp = json_response({"command_id": ticket.id, "status": ticket.status.value, "tick": tick})
    resp.status_code = 202
    resp.headers["Location"] = f"/api/v1/commands/{ticket.id}"
    return resp


@bp.get("/commands/<command_id>")
@operation(
    "A command's status and result",
    tags=("commands",),
    security=PLAYER,
    responses={200: Reply("Status", CommandStatus)},
    errors=(401, (404, "No such command, or another player's"), 429, 503),
)
def get_command(auth: AuthedPlayer, command_id: str) -> dict[str, Any]:
    rt, _world, player_id = auth
    if len(command_id) > 64:
        raise NotFound("no such command", details={"command_id": command_id[:64]})
    # recent commands come from memory; older ones (before a restart, or out of the
    # in-memory history) from the journal
    found = rt.command_status(command_id)
    if found is None:
        raise NotFound(
            "no such command (or too old to remember)", details={"command_id": command_id}
        )
    # Another player's command (or the engine's own) is "not found", as an unknown id is:
    # a 403 would confirm that the id exists. Journaled commands carry their actor too, so
    # this holds after a restart and once a command leaves the in-memory history.
    if found.pop("actor", None) != player_id:
        raise NotFound(
            "no such command (or too old to remember)", details={"command_id": command_id}
        )
    return found


def resolved_response(ticket: CommandTicket, app: Flask | None = None) -> Response:
    """200 with the result when applied; the rejection's own status and reason otherwise.
    ``app``: the app answering (default: the current app; given, no context is needed)."""
    data = ticket.to_dict()
    outcome = ticket.outcome
    if outcome is not None and outcome.ok:
        return json_response(data, app)
    err = data.get("error") or {}
    code = str(err.get("code") or "command_rejected")
    details = dict(err.get("details") or {})
    details.update({"command_id": ticket.id, "tick": ticket.tick})
    retry = StoreError.retry_after if code == "store_unavailable" else None
    return api_error(
        status_of(code, 409), code, str(err.get("message") or "rejected"), details, retry, app=app
    )
