"""JSON responses byte for byte as ``flask.jsonify`` makes them, for a fraction of the cost.

``jsonify(data)`` is ``app.json.response(data)``: Flask's default provider builds a new
``json.JSONEncoder`` (and a C encoder under it) for every response, which costs several times
what encoding a small answer does, and the command path answers with several (its 202, its 200
once applied, the error envelopes). Here data made only of what JSON itself has — dicts with
string keys, lists, printable ASCII strings, 64-bit integers, floats that Python prints
without an exponent, booleans, None — is encoded by orjson, which writes exactly the bytes the
default provider writes for it (sorted keys, compact separators, the trailing newline); any
other data, an app in debug mode (indented output) and an app whose provider is not Flask's
default take ``app.json.response``, as ``jsonify`` does. Either way the response is made by
the app's ``response_class`` with the provider's mimetype.
"""

from __future__ import annotations

from typing import Any, cast

import orjson
from flask import Flask, Response, current_app
from flask.json.provider import DefaultJSONProvider, JSONProvider

MAX_NODES = 4096
"""Values looked at before the data is left to the provider (a large answer, or a cycle,
which Python's encoder reports as such). Nesting beyond orjson's 255 levels is left to the
provider too (orjson refuses it)."""

FLOAT_PLAIN = (1e-4, 1e16)
"""Floats Python's ``repr`` (hence ``json``) writes without an exponent: ``1e-4 <= |x| <
1e16``, and zero. There both write the shortest digits that read back to the same float;
outside it the two spell exponents differently (``1e-05``, ``1e+16`` against orjson's
``0.00001``, ``1e16``), as they do NaN and infinities."""


def _plain(data: Any) -> bool:
    """Whether orjson encodes ``data`` exactly as ``json.dumps(ensure_ascii=True)`` does: only
    JSON's own types (not subclasses), strings and keys of printable ASCII (no escapes but those
    of quotes and backslashes, which both write alike), integers orjson takes (64 bits), floats
    without an exponent."""
    low, high = FLOAT_PLAIN
    stack = [data]
    more = stack.extend
    for _ in range(MAX_NODES):
        if not stack:
            return True
        value = stack.pop()
        kind = type(value)
        if kind is str:
            if not (value.isascii() and value.isprintable()):
                return False
        elif kind is dict:
            for key in value:
                if type(key) is not str or not (key.isascii() and key.isprintable()):
                    return False
            more(value.values())
        elif kind is int:
            if not -(2**63) <= value < 2**64:
                return False
        elif kind is float:
            size = abs(value)
            if not (size == 0.0 or low <= size < high):  # NaN fails both
                return False
        elif kind is list or kind is tuple:
            more(value)
        elif value is not None and kind is not bool:
            return False  # anything else is the provider's (its ``default``, subclasses)
    return not stack


def _fast(provider: JSONProvider, debug: bool) -> int | None:
    """The orjson options that reproduce ``provider.response`` (None: they cannot)."""
    cls = type(provider)
    if (
        not isinstance(provider, DefaultJSONProvider)
        or cls.dumps is not DefaultJSONProvider.dumps
        or cls.response is not DefaultJSONProvider.response
        or provider.compact is False
        or (provider.compact is None and debug)  # indented
    ):
        return None
    return orjson.OPT_APPEND_NEWLINE | (orjson.OPT_SORT_KEYS if provider.sort_keys else 0)


def json_response(data: Any, app: Flask | None = None) -> Response:
    """``jsonify(data)`` for ``app`` (default: the current app; given, no context is needed)."""
    target = current_app if app is None else app
    provider = target.json
    option = _fast(provider, target.debug)
    if option is not None and _plain(data):
        try:
            body = orjson.dumps(data, option=option)
        except orjson.JSONEncodeError:  # nested deeper than orjson goes
            pass
        else:
            mimetype = cast(DefaultJSONProvider, provider).mimetype
            return target.response_class(body, mimetype=mimetype)
    return cast(Response, provider.response(data))
