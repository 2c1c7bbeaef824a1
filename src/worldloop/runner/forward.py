"""Requests a web worker hands to the runner whole: what needs the live world, not a snapshot.

The admin API (clock controls, checkpoints, jobs, tasks), ``/metrics`` (the loop's counters
live in the runner) and ``/readyz`` (the runner's own assessment: overruns, store, halts) run
in the runner process through the same app, so they answer exactly as in the single-process
mode. When the runner does not answer, ``/readyz`` is answered here (503, ``runner_down``)
and everything else forwarded is a 503 with ``Retry-After``: reads of the world go on.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING
from urllib.parse import quote

from flask import Flask, Response, request

from ..bus.ipc import RunnerUnavailable
from .remote import RemoteRuntime

if TYPE_CHECKING:
    from ..state import WorldLoopState

FORWARDED_BLUEPRINTS = frozenset(
    {
        "worldloop_admin",
        "worldloop_jobs",
        "worldloop_tasks",
        "worldloop_admin_of_world",  # the same routes of the extra worlds (worldloop.api.worlds)
        "worldloop_jobs_of_world",
    }
)
FORWARDED_ENDPOINTS = frozenset(
    {
        "worldloop_health.metrics",
        "worldloop_health.readyz",
        "worldloop_worlds.list_worlds",  # the runner hosts the extra worlds
        "worldloop_worlds.create_world",
        "worldloop_worlds.delete_world",
    }
)
TIMEOUT = 30.0
"""Seconds a forwarded request may take (an admin step of many ticks waits for them)."""
PROBE_TIMEOUT = 1.0
"""Seconds the runner has to answer ``/readyz`` before this worker answers it (runner_down)."""


def forwarded(endpoint: str | None) -> bool:
    if endpoint is None:
        return False
    return endpoint in FORWARDED_ENDPOINTS or endpoint.partition(".")[0] in FORWARDED_BLUEPRINTS


def install_forwarding(app: Flask, state: WorldLoopState) -> None:
    """Forward this app's runner-side routes to the runner, once ``state`` serves one."""

    def forward() -> Response | None:
        runtime = state.runtime
        if not isinstance(runtime, RemoteRuntime) or not forwarded(request.endpoint):
            return None
        if request.endpoint == "worldloop_health.readyz" and not runtime.runner_up:
            return None  # answered here: the runner is down, and /readyz says so
        message = {
            "op": "http",
            "method": request.method,
            # PATH_INFO is decoded: quoted again, a `?` or `#` in a path segment stays in it.
            "path": quote(request.path, safe="/"),
            "query": request.query_string.decode("latin-1"),
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": base64.b64encode(request.get_data()).decode(),
            "remote_addr": request.remote_addr,
        }
        probe = request.endpoint == "worldloop_health.readyz"
        try:
            answer = runtime.ipc.request(message, timeout=PROBE_TIMEOUT if probe else TIMEOUT)
        except RunnerUnavailable:
            if request.endpoint == "worldloop_health.readyz":
                return None
            raise
        return Response(
            base64.b64decode(answer["body"]),
            status=int(answer["status"]),
            headers=[(str(k), str(v)) for k, v in answer["headers"]],
        )

    app.before_request(forward)
