"""The gateway process's life: load the app, follow the runner's feed, serve streams.

Started by the runner (worldloop.gateway.supervise) as ``python -m worldloop.gateway --app SPEC
--watch PID``. It loads the same app as the web workers, in the ``gateway`` role (init_app
neither starts a world nor spawns a runner), subscribes to the runner's feed through the same
IpcBus a web worker uses (and, on first request, each other world's: worldloop.gateway.worlds),
and serves ``--gateway`` (``host:port``: WORLDLOOP_GATEWAY, or its ``auto`` worked out by the
web server, worldloop.gateway.address) until SIGTERM/SIGINT or until the watched runner is gone.
It binds its port before anything else is served and then writes the address to ``--ready-fd``
(the supervisor's pipe): a port someone else holds is an exit at once, not a gateway that runs
without serving.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from typing import Any

from aiohttp import web

from ..runner.child import WATCH_EVERY, alive, load_app, parse_args
from .supervise import BIND_FAILED

log = logging.getLogger("worldloop.gateway")


def main(argv: list[str] | None = None) -> int:
    args = parse_args("python -m worldloop.gateway", argv)
    sock = None
    if args.gateway:  # bound before the app loads: a port someone holds costs no app load
        sock = _listen(args.gateway, args.reuse_port)
        if sock is None:
            return BIND_FAILED
        if args.reuse_port:  # one of several: the kernel would give this socket connections
            sock.close()  # while the app loads; bound again once it serves (a probe, here)
            sock = None

    from .. import lifecycle

    lifecycle.GATEWAY_PROCESS = True  # serving_role() is "gateway": no world, no runner here
    from ..bus.ipc import IpcBus
    from ..priority import lower_process
    from ..runner.ipc import endpoints
    from ..runner.remote import RemoteRuntime
    from ..runner.worlds import remote_world
    from ..state import state_of
    from .address import explicit
    from .commands import CommandWaits
    from .hub import Hub
    from .server import Gateway
    from .worlds import WorldHubs, follow

    app = load_app(args.app)
    state = state_of(app)
    settings = state.settings
    address = args.gateway or explicit(settings.gateway)
    if not address:
        log.error("worldloop: no gateway address (--gateway, WORLDLOOP_GATEWAY): nothing to serve")
        return 2
    if sock is None:
        sock = _listen(address, args.reuse_port)
        if sock is None:
            return BIND_FAILED
    lower_process(settings.web_nice)  # streams yield a core to the tick (worldloop.priority)
    world = state.runtime.world
    bus = IpcBus(
        endpoints(state.instance_path, world.name),
        world.name,
        cache_bytes=settings.snapshot_cache_bytes,
        early_outcomes=True,  # command waits answer before the snapshot file is written
    )
    runtime = RemoteRuntime(world, bus, rate_hz=settings.rate_hz)
    runtime.start()
    state.runtime = runtime  # the app's handlers (command submissions) use this connection
    hub = Hub(runtime, lambda: bus.latest, keyframe_every=settings.frame_keyframe_every)
    follow(bus, hub)
    # The runner's other worlds, found as a web worker finds them (worldloop.runner.worlds).
    state.host.resolve = lambda name: remote_world(state, name)
    worlds = WorldHubs(state, hub, keyframe_every=settings.frame_keyframe_every)
    waits = CommandWaits(app, runtime, settings.command_wait)
    gateway = Gateway(runtime, settings, hub, waits, worlds=worlds)

    async def watch(app: web.Application) -> Any:
        async def look() -> None:
            while alive(args.watch):
                await asyncio.sleep(WATCH_EVERY)
            log.info("worldloop: process %d is gone: the gateway stops", args.watch)
            os.kill(os.getpid(), signal.SIGTERM)  # run_app's own graceful exit

        task = asyncio.get_running_loop().create_task(look())
        yield
        task.cancel()

    web_app = gateway.app()
    web_app.cleanup_ctx.append(watch)
    log.info(
        "worldloop: gateway pid %d serves streams of world %r (and the runner's others) "
        "on http://%s",
        os.getpid(),
        world.name,
        address,
    )
    # Everything loaded so far (the app, its modules) lives as long as the process: out of the
    # collector's sight, a full collection among a thousand streams' objects no longer walks
    # it, and pauses the loop (the waits' and frames' tail latency) for less.
    gc.freeze()
    _ready(args.ready_fd, address)
    try:
        web.run_app(
            web_app,
            sock=sock,
            print=None,
            shutdown_timeout=2.0,
            access_log=None,
            backlog=2048,
            handle_signals=True,
        )
    finally:
        worlds.close()
        runtime.stop()
    return 0


def _listen(address: str, reuse_port: bool = False) -> socket.socket | None:
    """The gateway's listening socket on ``address``, bound now (aiohttp serves it:
    ``run_app(sock=...)``); None, said on stderr, when it cannot be. With ``reuse_port``
    (one of several gateway processes: worldloop.gateway.supervise) the others bind it too,
    and a socket someone else holds without SO_REUSEPORT still refuses all of them."""
    from .supervise import parse_address

    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server(
            (host, port), family=family, backlog=2048, reuse_port=reuse_port
        )
    except OSError as exc:
        log.error("worldloop: the gateway cannot listen on %s: %s", address, exc)
        return None


def _ready(fd: int, address: str) -> None:
    """Tell the supervisor (its pipe, when given) that ``address`` is bound."""
    if fd < 0:
        return
    try:
        os.write(fd, address.encode() + b"\n")
    except OSError:
        pass
    finally:
        os.close(fd)
