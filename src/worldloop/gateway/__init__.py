"""The stream gateway: live viewers (SSE) served by one asyncio process, not a thread each.

``python -m worldloop.gateway --app SPEC --watch PID`` is started by the runner process when
``WORLDLOOP_GATEWAY`` is set (worldloop.gateway.supervise); it follows the runner's feed like a
web worker does and serves ``GET /api/v1/stream`` with frames built once per tick per viewport
class (worldloop.gateway.hub).
"""

from __future__ import annotations

from .hub import Client, Hub
from .supervise import GatewaySupervisor, parse_address

__all__ = ["Client", "GatewaySupervisor", "Hub", "parse_address"]
