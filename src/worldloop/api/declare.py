"""Operations declared beside their routes: the pydantic models that parse a request, and what the
OpenAPI document says about it (``openapi.build_document`` reads these declarations off the app's
view functions, as flask-smorest builds its spec from each route's decorators).

::

    @bp.get("/entities")
    @operation("Entities in a bounding box", tags=("world",), query=EntitiesQuery,
               responses={200: Reply("A page of entities", EntityPage)}, errors=(400, 404))
    def list_entities(query: EntitiesQuery) -> dict[str, Any]: ...

Before the view runs, the security check runs, then the query string is parsed with ``query``
(a failure is ``400 bad_request`` with ``details.param``) and the JSON body with ``body`` (not a
JSON object: ``400 bad_request``; a failing model: ``422 invalid_command`` with
``details.field`` and every error). The parsed models are passed as ``query=`` and ``body=``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import current_app, request
from pydantic import BaseModel, ValidationError

from ..config import Settings
from ..errors import CommandInvalid
from ..models import error_details, error_message
from .auth import Security
from .common import json_object
from .errors import BadRequest

if TYPE_CHECKING:
    from .openapi import DocContext

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)

ATTR = "__worldloop_operation__"

ERROR_TEXT = {
    400: "Malformed request (bad JSON or query parameter; details.param names it)",
    401: "Missing, malformed or unknown bearer token",
    403: "The token does not allow this",
    404: "No such resource",
    409: "The world refused the command, or the clock is in the wrong state",
    413: "Request body too large",
    422: "The command or body failed validation (details.field names it)",
    429: "Rate limit exceeded (see Retry-After)",
    503: "The world is not running here, or the command queue is full",
}
"""What an error status means when an operation does not say more."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented response: a JSON model, or a raw schema of another media type."""

    description: str
    model: type[BaseModel] | None = None
    media_type: str = "application/json"
    schema: Mapping[str, Any] | None = None
    headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Operation:
    """Everything declared about one operation (see :func:`operation`)."""

    summary: str
    tags: tuple[str, ...]
    description: str | None
    operation_id: str | None
    security: Security | None
    query: type[BaseModel] | None
    body: type[BaseModel] | None
    path: type[BaseModel] | None
    headers: tuple[tuple[str, str], ...]
    responses: Mapping[int, Reply]
    errors: tuple[int | tuple[int, str], ...]
    amend: Callable[[DocContext, dict[str, Any]], None] | None


def operation(
    summary: str,
    *,
    tags: tuple[str, ...] = (),
    description: str | None = None,
    operation_id: str | None = None,
    security: Security | None = None,
    query: type[BaseModel] | None = None,
    body: type[BaseModel] | None = None,
    path: type[BaseModel] | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    responses: Mapping[int, Reply] | None = None,
    errors: tuple[int | tuple[int, str], ...] = (),
    amend: Callable[[DocContext, dict[str, Any]], None] | None = None,
) -> Callable[[F], F]:
    """Declare an operation: parse and check its request, and say what the document shows.

    ``security`` runs first (its result is passed as ``auth=`` when it says so); ``path``
    only documents path parameters (the route's converters parse them); ``headers`` are
    documented request headers as (name, description); ``errors`` are error statuses, a
    ``(status, text)`` pair overriding :data:`ERROR_TEXT`; ``amend`` adjusts the generated
    operation object from what the serving app has (its world's commands, its jobs).
    """
    op = Operation(
        summary=summary,
        tags=tags,
        description=description,
        operation_id=operation_id,
        security=security,
        query=query,
        body=body,
        path=path,
        headers=headers,
        responses=dict(responses or {}),
        errors=errors,
        amend=amend,
    )

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def view(*args: Any, **kwargs: Any) -> Any:
            if op.security is not None:
                granted = op.security.check()
                if op.security.inject:
                    kwargs["auth"] = granted
            if op.query is not None:
                kwargs["query"] = parse_query(op.query)
            if op.body is not None:
                kwargs["body"] = parse_body(op.body)
            return fn(*args, **kwargs)

        setattr(view, ATTR, op)
        return cast(F, view)

    return decorate


def declared(view: Callable[..., Any] | None) -> Operation | None:
    """The operation declared on a view function, if any."""
    op = getattr(view, ATTR, None)
    return op if isinstance(op, Operation) else None


def _settings() -> Settings:
    """The app's worldloop settings (the defaults for an app that only registered the API)."""
    state = current_app.extensions.get("worldloop")
    settings = getattr(state, "settings", None)
    return settings if isinstance(settings, Settings) else Settings()


def parse_query(model: type[M]) -> M:
    """The request's query string as ``model`` (first value of each name); BadRequest naming
    the parameter otherwise. Models read settings bounds from the validation context. An
    empty query string is no parameters, without parsing it (most requests send none)."""
    args = request.args.to_dict(flat=True) if request.query_string else {}
    try:
        return model.model_validate(args, context={"settings": _settings()})
    except ValidationError as exc:
        raise BadRequest(error_message(exc), details=error_details(exc, "param")) from None


def parse_body(model: type[M]) -> M:
    """The request's JSON object body as ``model``; CommandInvalid (422) naming the field."""
    data = json_object()
    try:
        return model.model_validate(data, context={"settings": _settings()})
    except ValidationError as exc:
        raise CommandInvalid(error_message(exc), details=error_details(exc)) from None
