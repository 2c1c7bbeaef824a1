"""Pydantic helpers shared by declared commands and the API: field types a command model can use,
and one way to turn a validation failure into the error envelope's ``details``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError

__all__ = [
    "Finite",
    "Integral",
    "Utf8",
    "ValidUnicode",
    "error_details",
    "error_message",
    "first_field",
]


def _utf8(text: str) -> str:
    """Refuse strings holding lone surrogates (JSON allows them; UTF-8 stores cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return text


Finite = Annotated[float, Field(allow_inf_nan=False)]
"""A finite number (an integer too large for a float is refused, not a server error)."""

ValidUnicode = AfterValidator(_utf8)
"""On a ``str`` field, after its constraints (so the schema keeps them): no lone surrogates."""

Utf8 = Annotated[str, ValidUnicode]
"""A string that can be stored as UTF-8."""


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integral = BeforeValidator(_integral)
"""On an ``int`` field, after its constraints (``Annotated[int, Field(ge=1), Integral]``, so the
schema keeps ``minimum``): an integer as JSON Schema's ``integer`` means it, so ``3.0`` is one
(JSON has one number type, and many clients write every number as a float); ``3.5`` and
``true`` are not, even in strict models."""


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    # no input (it may be huge or unprintable), no context (it may hold exception objects)
    return [
        {"loc": [str(p) for p in e["loc"]], "msg": _msg(e["msg"]), "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def _msg(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def first_field(exc: ValidationError) -> str:
    """The top-level field (or query parameter) of the first error; '' for the whole input."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    loc = errors[0]["loc"] if errors else ()
    return str(loc[0]) if loc else ""


def error_message(exc: ValidationError) -> str:
    """``field: what is wrong`` for the first error (the details list them all)."""
    errors = _errors(exc)
    if not errors:
        return "invalid input"
    first = errors[0]
    where = ".".join(first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def error_details(exc: ValidationError, key: str = "field") -> dict[str, Any]:
    """``{key: first field, "errors": [{loc, msg, type}, ...]}`` for an error envelope."""
    return {key: first_field(exc), "errors": _errors(exc)}
