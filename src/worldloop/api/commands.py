"""POST /api/v1/commands and GET /api/v1/commands/{id}: a player acts on its own avatar."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from ..commands import CommandTicket
from ..errors import CommandInvalid, status_of
from ..state import current_settings
from .common import current_player, json_object, query_bool
from .errors import Forbidden, NotFound, api_error

bp = Blueprint("worldloop_commands", __name__, url_prefix="/api/v1")


@bp.post("/commands")
def submit_command() -> Response:
    rt, world, player_id = current_player()
    wait = query_bool("wait")
    body = json_object()
    type_ = body.get("type")
    allowed = list(world.public_command_types)
    if not isinstance(type_, str) or type_ not in allowed:
        raise CommandInvalid(
            "type must be one of " + ", ".join(allowed),
            details={"field": "type", "allowed": allowed},
        )
    payload = {k: v for k, v in body.items() if k != "type"}
    eid = payload.get("entity_id")
    if isinstance(eid, int) and not isinstance(eid, bool):
        own = world.avatar_of(rt.snapshot, player_id)
        if own is not None and eid != own:
            raise Forbidden(
                "a player can act only on its own avatar",
                details={"entity_id": eid, "own_entity_id": own},
            )
    tick = rt.snapshot.tick
    ticket = rt.submit(type_, payload, actor=player_id)
    if wait and ticket.wait(current_settings().command_wait):
        return _resolved(ticket)
    resp = jsonify({"command_id": ticket.id, "status": ticket.status.value, "tick": tick})
    resp.status_code = 202
    resp.headers["Location"] = f"/api/v1/commands/{ticket.id}"
    return resp


@bp.get("/commands/<command_id>")
def get_command(command_id: str) -> dict[str, Any]:
    rt, _world, player_id = current_player()
    if len(command_id) > 64:
        raise NotFound("no such command", details={"command_id": command_id[:64]})
    # recent commands come from memory; older ones (before a restart, or out of the
    # in-memory history) from the journal
    found = rt.command_status(command_id)
    if found is None:
        raise NotFound(
            "no such command (or too old to remember)", details={"command_id": command_id}
        )
    if found.get("actor", player_id) != player_id:
        raise Forbidden("this command belongs to another player")
    found.pop("actor", None)
    return found


def _resolved(ticket: CommandTicket) -> Response:
    """200 with the result when applied; the rejection's own status and reason otherwise."""
    data = ticket.to_dict()
    outcome = ticket.outcome
    if outcome is not None and outcome.ok:
        return jsonify(data)
    err = data.get("error") or {}
    code = str(err.get("code") or "command_rejected")
    details = dict(err.get("details") or {})
    details.update({"command_id": ticket.id, "tick": ticket.tick})
    return api_error(status_of(code, 409), code, str(err.get("message") or "rejected"), details)
