"""docs/deploy.md runs as written: every shell block, file, unit and proxy config on it.

Blocks are marked on the page (``<!-- test: KIND [NAME] -->`` before a fenced block):
``file NAME`` is written to the working folder; ``server`` starts a server (the one before it
is stopped with SIGTERM) and waits for ``/readyz``; ``run`` runs in bash against the latest
server and must exit 0; ``unit`` is the systemd unit, whose ``Environment=`` and
``ExecStart=`` are run as systemd would (paths under /srv/worldloop moved to this test's
folder); ``nginx`` is checked for what SSE needs, and by ``nginx -t`` where nginx is installed.
Port 8000 on the page becomes a free port.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.redis_support import REDIS_URL, drop_prefix, redis_available
from tests.store_support import PG_URL, drop_pg_schema, postgres_available
from tests.support import BIN, ROOT, SRC, Server, free_port, http, service_required, wait_for

pytestmark = pytest.mark.slow

DOC = ROOT / "docs" / "deploy.md"
MARK = re.compile(r"<!-- test: (\w+)(?: ([\w.]+))? -->\n```(\w+)\n(.*?)```", re.S)
DOC_PG = "postgresql+psycopg://worldloop@127.0.0.1:5432/worldloop"


@dataclass(frozen=True)
class Block:
    kind: str
    name: str | None
    lang: str
    text: str


def blocks() -> list[Block]:
    return [Block(k, n, lang, text) for k, n, lang, text in MARK.findall(DOC.read_text())]


def test_every_command_block_on_the_page_is_marked_for_this_test() -> None:
    text = DOC.read_text()
    fences = re.findall(r"(?:<!-- test: [^>]*-->\n)?```(?:sh|bash|ini|nginx|python)\n", text)
    unmarked = [f for f in fences if not f.startswith("<!-- test:")]
    assert not unmarked, unmarked
    kinds = [b.kind for b in blocks()]
    assert kinds.count("server") >= 4 and "unit" in kinds and "nginx" in kinds


class Runner:
    """Runs the page's blocks in one folder, one server at a time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.server: Server | None = None
        self.schema = f"deploy_{uuid.uuid4().hex[:8]}"
        self.env = dict(os.environ)
        self.env.update(
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            PYTHONPATH=f"{folder}{os.pathsep}{SRC}",
            PYTHONUNBUFFERED="1",
            WORLDLOOP_INSTANCE_PATH=str(folder / "instance"),
        )

    def text(self, block: Block) -> str:
        out = block.text.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
        if block.name in ("postgres", "redis"):
            out = out.replace(DOC_PG, PG_URL)
            out = out.replace(
                "WORLDLOOP_STORE_SCHEMA=meadow", f"WORLDLOOP_STORE_SCHEMA={self.schema}"
            )
            out = out.replace("redis://127.0.0.1:6379/0", REDIS_URL)
            out = out.replace(
                "WORLDLOOP_REDIS_PREFIX=meadow:", f"WORLDLOOP_REDIS_PREFIX={self.schema}:"
            )
        return out

    def start(self, command: str, env: dict[str, str] | None = None) -> Server:
        self.stop()
        n = len(list(self.folder.glob("server-*.log")))
        self.server = Server(
            ["bash", "-c", command],  # bash execs a lone command: the pid is the server's
            port=self.port,
            env={**self.env, **(env or {})},
            cwd=self.folder,
            log_path=self.folder / f"server-{n}.log",
        )

        def ready() -> bool:
            assert self.server is not None
            if self.server.proc.poll() is not None:
                raise AssertionError(f"server exited:\n{self.server.log}")
            return self.server.get("/readyz", timeout=2)[0] == 200

        wait_for(ready, 60, 0.1, f"{command!r} to be ready")
        return self.server

    def run(self, command: str) -> str:
        proc = subprocess.run(
            ["bash", "-ec", command], cwd=self.folder, env=self.env, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
        return proc.stdout

    def stop(self) -> None:
        if self.server is not None:
            assert self.server.stop(20) == 0, self.server.log
            log = self.server.log
            assert "final snapshot at tick" in log and "Traceback" not in log, log
            self.server = None


def run_unit(runner: Runner, unit: str, folder: Path) -> None:
    """The unit's Environment= and ExecStart=, as systemd would run them (paths moved)."""
    env: dict[str, str] = {}
    exec_start = ""
    for line in unit.splitlines():
        key, _, value = line.partition("=")
        value = value.replace("/srv/worldloop/.venv/bin/", f"{BIN}/")
        value = value.replace("/srv/worldloop", str(folder))
        if key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
        elif key == "ExecStart":
            exec_start = value
    assert exec_start.startswith(f"{BIN}/gunicorn ")
    env["GUNICORN_CMD_ARGS"] = f"-b 127.0.0.1:{runner.port}"  # beside the config's bind
    srv = runner.start(shlex.join(shlex.split(exec_start)), env)
    assert "gthread worker with 64 threads" in srv.log
    assert env["WORLDLOOP_TRUSTED_PROXIES"] == "1"


def check_nginx(conf: str, folder: Path) -> None:
    stream = conf.split("location /api/v1/stream", 1)[1].split("}", 1)[0]
    for directive in ("proxy_buffering off;", "proxy_http_version 1.1;", "proxy_cache off;"):
        assert directive in stream, directive
    timeout = re.search(r"proxy_read_timeout (\d+)([smh]);", stream)
    assert timeout is not None
    seconds = int(timeout.group(1)) * {"s": 1, "m": 60, "h": 3600}[timeout.group(2)]
    assert seconds >= 60
    assert conf.count("X-Forwarded-For $proxy_add_x_forwarded_for") == 2
    nginx = shutil.which("nginx")
    if nginx is not None:
        main = folder / "nginx-test.conf"
        main.write_text(
            f"pid {folder}/nginx.pid; error_log stderr; events {{}}\n"
            f"http {{ access_log off; {conf.replace('listen 80', f'listen {free_port()}')} }}\n"
        )
        subprocess.run([nginx, "-t", "-c", str(main), "-p", str(folder)], check=True)


def test_the_deploy_guide_runs_as_written(tmp_path: Path) -> None:
    runner = Runner(tmp_path)
    pg_schema_used = False
    no_postgres = False
    try:
        for block in blocks():
            if no_postgres and block.kind == "run":
                continue  # the check that goes with the PostgreSQL server
            no_postgres = no_postgres and block.kind != "server"
            if block.kind == "file":
                assert block.name
                (tmp_path / block.name).write_text(block.text)
            elif block.kind == "server":
                if block.name in ("postgres", "redis"):
                    if not postgres_available():
                        assert not service_required("postgres"), f"no PostgreSQL at {PG_URL}"
                        no_postgres = True  # outside CI: skip just this server and its check
                        continue
                    if block.name == "redis" and not redis_available():
                        assert not service_required("redis"), f"no Redis at {REDIS_URL}"
                        no_postgres = True
                        continue
                    pg_schema_used = True
                runner.start(runner.text(block).strip())
            elif block.kind == "run":
                assert runner.server is not None
                if "kill -TERM" in block.text:  # this one stops the server itself
                    pid_file = tmp_path / "app.pid"
                    assert int(pid_file.read_text()) == runner.server.proc.pid  # the master
                    runner.run(runner.text(block))
                    assert runner.server.proc.wait(10) == 0
                    server = runner.server
                    wait_for(  # written by the runner process once the master is gone
                        lambda s=server: "final snapshot at tick" in s.log,
                        15,
                        0.1,
                        "final snapshot",
                    )
                    assert not pid_file.exists()  # gunicorn removes it on a clean exit
                    runner.server.stop()
                    runner.server = None
                    continue
                out = runner.run(runner.text(block))
                assert out.strip()
            elif block.kind == "unit":
                run_unit(runner, block.text, tmp_path)
            elif block.kind == "nginx":
                check_nginx(block.text, tmp_path)
            else:
                pytest.fail(f"unknown block kind {block.kind}")
        runner.stop()
    finally:
        if runner.server is not None:
            runner.server.signal_group(signal.SIGKILL)
        if pg_schema_used:
            drop_pg_schema(runner.schema)
            if redis_available():
                drop_prefix(f"{runner.schema}:")
    with pytest.raises(OSError):  # nothing left listening: every server stopped cleanly
        http("GET", f"http://127.0.0.1:{runner.port}/healthz", timeout=2)
