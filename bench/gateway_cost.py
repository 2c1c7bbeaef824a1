"""Instructions the stream gateway spends per acknowledged command (callgrind): a figure the
machine's load does not move, for A/B runs of the command path on a shared box.

Starts the demo as bench/gateway.py does (gunicorn -w 2 with ``WORLDLOOP_GATEWAY``: runner and
gateway), joins ``--players``, then starts a second gateway process of the same runner, as the
runner starts its own but under ``valgrind --tool=callgrind`` (instrumentation off while it
loads), serving this checkout's code or ``--src``'s. The world is paused, so that what the gateway
does per command does not depend on how fast it runs under callgrind: with instrumentation on it
measures an idle window (``--idle`` s: the feed's beats, the timers) and then ``--rounds`` rounds
in which ``--concurrency`` players each send one ``move_to?wait=true`` at once (a burst, as the
players of bench/gateway.py do), and once the runner queued them all, one step of the world
applies them (one tick, one snapshot to map, per burst). Per command: the rounds' instructions
less the idle rate over the same time, over the commands answered 200.

    python bench/gateway_cost.py --rounds 20 --concurrency 20
    python bench/gateway_cost.py --rounds 20 --concurrency 20 --src /tmp/gwbase/src
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchenv import header, meadow_config
from gateway import server_processes
from gateway_clients import join_players
from liveserver import free_port, running, server_env, wait_for

ADMIN = "gateway-cost-bench-admin-token"


def healthz(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/healthz")
        ok = bool(orjson.loads(conn.getresponse().read())["running"])
        conn.close()
        return ok
    except (OSError, ValueError, KeyError):
        return False


def measured_argv(argv: list[bytes], address: str) -> list[str]:
    """The running gateway's command line for the measured one: its own address (``--gateway``
    on the command line wins over WORLDLOOP_GATEWAY) and no ``--ready-fd`` (the runner's pipe
    to the first gateway is not open in this one)."""
    out: list[str] = []
    args = iter(a.decode() for a in argv)
    for arg in args:
        if arg == "--ready-fd":
            next(args, None)
        elif arg == "--gateway":
            next(args, None)
            out += ["--gateway", address]
        else:
            out.append(arg)
    return out


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def dumped(out: Path, label: str, timeout: float = 120.0) -> int:
    """The instruction total of the dump labelled ``label`` (callgrind writes it a moment after
    it was asked for)."""

    def find() -> int | None:
        for f in out.parent.glob(out.name + ".*"):
            text = f.read_text(errors="replace")
            if f"Trigger: Client Request: {label}" in text or f"dump {label}" in text:
                found = re.search(r"^totals: (\d+)", text, re.M)
                if found:
                    return int(found.group(1))
        return None

    return int(wait_for(find, timeout, f"the callgrind dump {label!r}"))


def admin(port: int, path: str, body: dict[str, int] | None = None) -> dict[str, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            "POST" if path != "status" else "GET",
            f"/api/v1/admin/{path}",
            body=orjson.dumps(body) if body is not None else None,
            headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        out = orjson.loads(resp.read())
        if resp.status != 200:
            raise RuntimeError(f"admin {path}: {resp.status} {out}")
        return dict(out)
    finally:
        conn.close()


async def rounds(port: int, gport: int, tokens: list[str], n: int, concurrency: int) -> int:
    """``n`` bursts of ``concurrency`` waited commands, each burst applied by one step of the
    paused world once all of it is queued (one tick, one snapshot per burst, however slow the
    measured gateway is); how many were answered 200."""
    import aiohttp

    ok = 0
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(token: str, i: int) -> int:
            async with session.post(
                f"http://127.0.0.1:{gport}/api/v1/commands?wait=true",
                json={"type": "move_to", "x": float(i % 900), "y": 50.0},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                await resp.read()
                return int(resp.status == 200)

        for r in range(n):
            batch = tokens[(r * concurrency) % len(tokens) :][:concurrency]
            batch += tokens[: concurrency - len(batch)]
            sent = [asyncio.ensure_future(one(t, r)) for t in batch]
            # Asked of a web worker, not of the measured gateway: its instructions stay its own.
            async with asyncio.timeout(300):
                while (await asyncio.to_thread(admin, port, "status"))["queue_depth"] < len(batch):
                    await asyncio.sleep(0.05)
            await asyncio.to_thread(admin, port, "step", {"n": 1})
            ok += sum(await asyncio.gather(*sent))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--players", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--src", type=Path, help="the measured gateway's source tree")
    parser.add_argument("--out", type=Path, help="write the result here too (markdown)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="wl-gw-cost-"))
    instance = tmp / "instance"
    port, gport, vport = free_port(), free_port(), free_port()
    env = server_env(
        instance,
        WORLDLOOP_GATEWAY=f"127.0.0.1:{gport}",
        WORLDLOOP_RUNNER="process",
        **meadow_config(args.entities),
        WORLDLOOP_JOIN_RATE_BURST="100000",
        WORLDLOOP_RATE_LIMIT="1000",
        WORLDLOOP_RATE_BURST="1000",
        WORLDLOOP_ADMIN_TOKEN=ADMIN,
    )
    argv = [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "gthread", "--threads", "8"]
    argv += ["--bind", f"127.0.0.1:{port}", "worldloop.demo:create_app()"]
    with running(argv, env, tmp, tmp / "server.log") as srv:
        srv.wait_ready(f"http://127.0.0.1:{port}", 120)
        wait_for(lambda: healthz(gport), 120, "the gateway")
        tokens = join_players(port, args.players)
        gw = next(pid for pid, role in server_processes(instance).items() if role == "gateway")
        cmd = measured_argv(
            Path(f"/proc/{gw}/cmdline").read_bytes().rstrip(b"\0").split(b"\0"),
            f"127.0.0.1:{vport}",
        )
        genv = dict(
            line.split(b"=", 1)
            for line in Path(f"/proc/{gw}/environ").read_bytes().split(b"\0")
            if b"=" in line
        )
        genv[b"WORLDLOOP_GATEWAY"] = f"127.0.0.1:{vport}".encode()
        if args.src is not None:
            genv[b"PYTHONPATH"] = os.fsencode(args.src.resolve()) + b":" + genv[b"PYTHONPATH"]
        out = tmp / "callgrind.out"
        vg = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
        vg += [f"--callgrind-out-file={out}", *cmd]
        with open(tmp / "valgrind.log", "wb") as log:
            proc = subprocess.Popen(
                vg, env=genv, cwd=os.readlink(f"/proc/{gw}/cwd"), stdout=log, stderr=log
            )
        try:
            wait_for(lambda: healthz(vport), 600, "the gateway under callgrind")
            admin(port, "pause")
            asyncio.run(rounds(port, vport, tokens, 3, args.concurrency))  # warm: caches
            control(proc.pid, "-i", "on")
            control(proc.pid, "-z")
            t0 = time.monotonic()
            time.sleep(args.idle)
            control(proc.pid, "-d", "idle")
            idle_s = time.monotonic() - t0
            control(proc.pid, "-z")
            t0 = time.monotonic()
            ok = asyncio.run(rounds(port, vport, tokens, args.rounds, args.concurrency))
            control(proc.pid, "-d", "commands")
            busy_s = time.monotonic() - t0
            idle_ir, busy_ir = dumped(out, "idle"), dumped(out, "commands")
        finally:
            proc.terminate()
            proc.wait(60)
    per = (busy_ir - idle_ir * busy_s / idle_s) / max(1, ok)
    lines = header("Stream gateway: instructions per acknowledged command (callgrind)")
    if args.src is not None:
        lines += [f"Gateway code from `{args.src}` (a baseline), not this checkout.", ""]
    lines += [
        "| figure | value |",
        "|---|---|",
        f"| commands answered 200 | {ok} of {args.rounds * args.concurrency} "
        f"({args.rounds} bursts of {args.concurrency}) in {busy_s:.1f} s |",
        f"| idle instructions | {idle_ir / idle_s / 1e6:.1f} M/s ({idle_s:.1f} s) |",
        f"| instructions per command, idle rate taken out | {per / 1e6:.3f} M |",
        "",
    ]
    text = "\n".join(lines)
    if args.out is not None:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
