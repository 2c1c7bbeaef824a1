"""Schemathesis hooks for the fuzz phase (loaded through ``SCHEMATHESIS_HOOKS``).

The ``Idempotency-Key`` header's contract is one no schema can state: a fresh random key per
request, the same key only for a retry of the same request (another request with it is
``422 idempotency_key_reused``, by design). Generated keys collide (shrinking makes them all
``0000000000000000``), so before each call a well-formed key is replaced by one derived from
it *and* the request: a repeated request keeps its key (the replay path is still fuzzed), a
different request never reuses one. Malformed keys are left as generated (they must be 400).
This is the hook schemathesis itself suggests for fields that must be unique.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import schemathesis

HEADER = "Idempotency-Key"
_WELL_FORMED = re.compile(r"[A-Za-z0-9_.:-]{16,128}")


def _request_text(case: Any) -> str:
    try:
        body = json.dumps(case.body, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        body = repr(case.body)
    query = json.dumps(case.query, sort_keys=True, default=repr)
    return f"{case.method}\0{case.formatted_path}\0{query}\0{body}"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    headers = case.headers
    key = headers.get(HEADER) if isinstance(headers, dict) else None
    if isinstance(key, str) and _WELL_FORMED.fullmatch(key):
        digest = hashlib.sha256(f"{key}\0{_request_text(case)}".encode()).hexdigest()
        headers[HEADER] = f"fuzz-{digest[:40]}"
