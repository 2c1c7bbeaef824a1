"""A TCP forwarder the test controls, standing between one server and one service (Redis or
PostgreSQL): :meth:`Forwarder.cut` closes the listener and every connection through it, as a
host cut off from that service sees it (refused and reset), and :meth:`Forwarder.clear` opens
the same port again. Other hosts, connected directly, see nothing of it."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

from tests.support import free_port


def watch(sock: socket.socket) -> None:
    """Probe the peer of ``sock`` as PostgreSQL probes a session's client with worldloop's
    session settings (``worldloop.store.pg_options.SESSION_DEFAULTS``: keepalives after 10 s,
    every 3 s, 3 probes; unacknowledged data for 10 s): the target sees the forwarder, not the
    client, so the forwarder must notice a client behind a dead path and end the connection."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 10_000)


class Forwarder:
    """Forwards ``host``:``port`` (127.0.0.1 unless given: tests/netns.py listens on a bridge
    address) to ``target`` (host, port) on a thread of its own; with ``keepalive``, each
    client's connection is watched as the target would watch it (:func:`watch`)."""

    def __init__(
        self, target: tuple[str, int], host: str = "127.0.0.1", *, keepalive: bool = False
    ) -> None:
        self.target = target
        self.host = host
        self.keepalive = keepalive
        self.port = free_port(host)
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._upstream: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self.clear()

    def upstream_ports(self) -> list[int]:
        """The local ports of the open connections to the target (how the target sees them)."""
        with self._lock:
            socks = list(self._upstream)
        ports = []
        for sock in socks:
            with contextlib.suppress(OSError):
                ports.append(int(sock.getsockname()[1]))
        return ports

    def clear(self) -> None:
        """Listen (again) on the same port."""
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Close the listener and every open connection (both ends)."""
        with self._lock:
            listener, self._listener = self._listener, None
            socks, self._socks = self._socks, set()
            self._upstream = set()
        for sock in [*([listener] if listener else []), *socks]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._stop.set()
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut: the listener is closed
            if self.keepalive:
                watch(client)
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._socks.update((client, upstream))
                self._upstream.add(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        peer = {a: b, b: a}
        try:
            a.setblocking(False)
            b.setblocking(False)
            sel.register(a, selectors.EVENT_READ)
            sel.register(b, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select(1.0):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(65536)
                    if not data:
                        return
                    dst = peer[src]
                    dst.setblocking(True)
                    dst.sendall(data)
                    dst.setblocking(False)
        except (OSError, ValueError):
            return
        finally:
            sel.close()
            with self._lock:
                self._socks.discard(a)
                self._socks.discard(b)
                self._upstream.discard(b)
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()
