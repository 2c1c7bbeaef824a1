"""Hosts as Linux network namespaces for the multi-host tests (SCALEOUT.md, "Testing it on one
small machine"): :func:`lab` makes a bridge in the root namespace and one namespace per host,
each joined to the bridge by a veth pair, on a private /24 that nothing on the machine uses,
and removes all of it on the way out, even when the test fails.

The root namespace holds three addresses on the bridge: the *client* address (the primary
one, so the test's own connections to a host come from it), one for Redis and one for
PostgreSQL. The test's forwarders listen on the two service addresses and forward to the
services on 127.0.0.1, which never leave loopback. A host is cut off from one service by a
blackhole route to that service's address inside the host's namespace: a real partition
(the kernel drops what the host sends; its open connections hang until their timeouts, new
ones fail), while the client still reaches the host. Nothing is sent outside 127.0.0.0/8 and
the lab's own /24.

Where ``ip netns add`` is refused (not root, no ``ip``), the tests skip with the reason, except
under CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import Server, child_env, service_required

SUBNETS = [f"10.213.{n}.0/24" for n in range(100, 250)]
"""Candidate /24s for a lab; the first one that overlaps no address or route is taken."""

ROUTE_TYPES = {"local", "broadcast", "anycast", "multicast", "blackhole", "unreachable", "prohibit"}
"""Route types ``ip route`` prints before the destination."""

CLIENT, REDIS, POSTGRES = 254, 1, 2
"""Host parts of the root namespace's addresses on the bridge."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise with its stderr when ``check`` and it fails."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def require_netns() -> None:
    """Skip (fail under CI=true) unless this process may create a network namespace."""
    reason = None
    if shutil.which("ip") is None:
        reason = "no `ip` command (iproute2)"
    else:
        probe = f"wlprobe{os.getpid()}"
        made = ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            reason = f"`ip netns add` is not permitted here: {made.stderr.strip()}"
        else:
            ip("netns", "del", probe, check=False)
    if reason is not None:
        if service_required("netns"):
            pytest.fail(f"network namespaces are required under CI=true: {reason}")
        pytest.skip(reason)


def free_subnet() -> ipaddress.IPv4Network:
    """The first candidate /24 that no address or route of the root namespace overlaps."""
    used = []
    for line in ip("-4", "-o", "addr", "show").stdout.splitlines():
        used.append(ipaddress.ip_interface(line.split()[3]).network)
    for line in ip("-4", "route", "show", "table", "all").stdout.splitlines():
        words = line.split()
        dest = words[1] if words[0] in ROUTE_TYPES else words[0]
        with contextlib.suppress(ValueError):
            used.append(ipaddress.ip_network(dest, strict=False))
    for cand in SUBNETS:
        net = ipaddress.ip_network(cand)
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free 10.213.x.0/24 for the test's hosts")


@dataclass
class Host:
    """One "host": a network namespace with one address on the lab's bridge."""

    name: str
    veth: str
    address: str
    lab: Lab
    servers: list[Server] = field(default_factory=list)

    def pids(self) -> list[int]:
        """Every process running in this namespace (``ip netns pids``)."""
        return [int(p) for p in ip("netns", "pids", self.name).stdout.split()]

    def kill(self) -> list[int]:
        """SIGKILL every process in the namespace; the pids killed."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def cut(self, service: str) -> None:
        """Drop everything this host sends to ``service`` ("redis" or "postgres")."""
        ip("-n", self.name, "route", "add", "blackhole", self.lab.service(service) + "/32")

    def heal(self, service: str) -> None:
        """Remove the blackhole route of :meth:`cut`."""
        ip("-n", self.name, "route", "del", "blackhole", self.lab.service(service) + "/32")

    def server(
        self, argv: Sequence[str], cwd: Path, *, port: int, env: dict[str, str], name: str
    ) -> Server:
        """Start ``argv`` inside the namespace (``{host}`` and ``{port}`` filled in); the
        returned :class:`Server` is reached at this host's address and stopped by the lab."""
        argv = [a.replace("{host}", self.address).replace("{port}", str(port)) for a in argv]
        full_env = child_env(WORLDLOOP_INSTANCE_PATH=str(cwd / "instance"), **env)
        srv = Server(
            ["ip", "netns", "exec", self.name, *argv],
            port=port,
            env=full_env,
            cwd=cwd,
            log_path=cwd / f"{name}.log",
        )
        srv.base = f"http://{self.address}:{port}"
        self.servers.append(srv)
        return srv


class Lab:
    """A bridge and the namespaces joined to it; see the module docstring."""

    made = itertools.count()

    def __init__(self, hosts: int) -> None:
        # unique per lab: names of a lab removed a moment ago may still be taken
        tag = f"{os.getpid() % 100000}{next(Lab.made) % 100}"
        self.net = free_subnet()
        self.bridge = f"wlbr{tag}"
        self.hosts: list[Host] = []
        self._hosts = hosts
        self._tag = tag

    def addr(self, n: int) -> str:
        return str(self.net.network_address + n)

    def service(self, service: str) -> str:
        """The root namespace's address on the bridge for ``service``."""
        return self.addr({"redis": REDIS, "postgres": POSTGRES}[service])

    @property
    def client(self) -> str:
        return self.addr(CLIENT)

    def create(self) -> None:
        prefix = self.net.prefixlen
        ip("link", "add", self.bridge, "type", "bridge")
        ip("link", "set", self.bridge, "up")
        # the client address first: the primary one, the source of the test's connections
        for n in (CLIENT, REDIS, POSTGRES):
            ip("addr", "add", f"{self.addr(n)}/{prefix}", "dev", self.bridge)
        for i in range(self._hosts):
            name, veth = f"wl{self._tag}h{i}", f"wlv{self._tag}h{i}"
            ip("netns", "add", name)
            host = Host(name, veth, self.addr(11 + i), self)
            self.hosts.append(host)
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
            ip("link", "set", veth, "master", self.bridge, "up")
            ip("-n", name, "addr", "add", f"{host.address}/{prefix}", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
            ip("-n", name, "link", "set", "lo", "up")

    def remove(self) -> None:
        """Stop every server, kill what is left in each namespace, delete the namespaces (and
        with them the veth pairs) and the bridge. Never raises: it runs after failures."""
        for host in self.hosts:
            for srv in host.servers:
                with contextlib.suppress(Exception):
                    srv.stop()
            with contextlib.suppress(Exception):
                host.kill()
            # the namespace itself goes once the kernel drops its last reference (it may lag):
            # the root end of the veth pair is deleted here, which deletes both ends at once
            ip("link", "del", host.veth, check=False)
            ip("netns", "del", host.name, check=False)
        ip("link", "del", self.bridge, check=False)


@contextlib.contextmanager
def lab(hosts: int = 2) -> Iterator[Lab]:
    """A lab of ``hosts`` namespaces on a fresh bridge, removed on exit whatever happened."""
    require_netns()
    with _choosing():
        made = Lab(hosts)
        try:
            made.create()
        except BaseException:
            made.remove()
            raise
    try:
        yield made
    finally:
        made.remove()


@contextlib.contextmanager
def _choosing() -> Iterator[None]:
    """One lab at a time picks its free /24 and takes it (``pytest -n``: labs of other
    workers would otherwise see the same subnet free), across processes by a file lock."""
    with open(Path(tempfile.gettempdir()) / "worldloop-netns.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released as the file closes
        yield
