"""Schemathesis hooks for the fuzz phase (loaded through ``SCHEMATHESIS_HOOKS``).

The ``Idempotency-Key`` header's contract is one no schema can state: a fresh random key per
request, the same key only for a retry of the same request (another request with it is
``422 idempotency_key_reused``, by design). Generated keys collide (shrinking and the coverage
phase make them all ``0000000000000000``), so before each call a well-formed key is replaced by
one derived from it *and* the request: a repeated request keeps its key (the replay path is
still fuzzed), a different request never reuses one. Malformed keys are left as generated (they
must be 400). This is the hook schemathesis itself suggests for fields that must be unique.

``case.headers`` is a ``requests`` ``CaseInsensitiveDict``, not a ``dict``: the header is
looked up through the ``MutableMapping`` interface (any spelling of its name). A case sent
twice (a check re-sending it, a stateful replay) arrives with the key this hook derived; the
original key is recovered so that the derived key depends on the request actually sent.
The edit is not an edit of what the case tests (see ``before_call``).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import MutableMapping
from typing import Any

import schemathesis

HEADER = "Idempotency-Key"
PREFIX = "fuzz-"
_WELL_FORMED = re.compile(r"[A-Za-z0-9_.:-]{16,128}")
_derived: dict[str, str] = {}
"""Derived key -> the generated key it came from (to re-derive for a re-sent, changed case)."""
_lock = threading.Lock()


def request_text(case: Any) -> str:
    """What makes two requests the same request: method, path, query, media type, body."""
    try:
        body = json.dumps(case.body, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        body = repr(case.body)
    query = json.dumps(case.query, sort_keys=True, default=repr)
    media = getattr(case, "media_type", None)
    return f"{case.method}\0{case.formatted_path}\0{query}\0{media}\0{body}"


def derive(key: str, case: Any) -> str:
    """The key to send for ``case``: one per (generated key, request)."""
    with _lock:
        original = _derived.get(key, key)
        digest = hashlib.sha256(f"{original}\0{request_text(case)}".encode()).hexdigest()
        new = f"{PREFIX}{digest[:40]}"
        _derived[new] = original
    return new


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    headers = case.headers
    if not isinstance(headers, MutableMapping):
        return
    key = headers.get(HEADER)
    if isinstance(key, str) and _WELL_FORMED.fullmatch(key):
        headers[HEADER] = derive(key, case)
        # A schema-valid key for a schema-valid key: what the case tests is unchanged. Without
        # this, schemathesis sees an edit, revalidates the case and relabels a negative one
        # ("missing Authorization") as positive, sends the CLI's -H Authorization after all,
        # then reports ST203 for the 200 it gets. Case.call takes this same baseline just
        # before this hook (schemathesis 4.32).
        resync = getattr(case, "_sync_validated_hashes", None)
        if callable(resync):
            resync()
