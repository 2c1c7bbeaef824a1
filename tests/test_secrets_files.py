"""Secrets and files (issue 10, deliverable 5): what an admin token means, and the modes of
what worldloop writes to disk, whatever the umask."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from worldloop.files import private_dir
from worldloop.lease.file import FileLease
from worldloop.store.sql import SqlStore

from .support import child_env, flask_argv, free_port, running_server


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    """The most permissive umask, so only explicit modes can make files private."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_sqlite_store_and_its_wal_files_are_private(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "a" / "b" / "world.db"
    store = SqlStore(f"sqlite:///{db}")
    store.append("w", 1, [{"id": "c1", "seq": 1, "type": "t", "payload": {}, "ok": True}])
    try:
        assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700
        for name in ("world.db", "world.db-wal", "world.db-shm"):
            assert mode(db.parent / name) == 0o600, name
    finally:
        store.close()


def test_an_existing_folder_keeps_its_mode(tmp_path: Path, open_umask: None) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    private_dir(shared / "mine")
    assert mode(shared) == 0o755 and mode(shared / "mine") == 0o700


def test_a_new_lease_file_is_private(tmp_path: Path, open_umask: None) -> None:
    lease = FileLease(tmp_path / "inst" / "w.lock", "w")
    lease.acquire()
    try:
        assert mode(tmp_path / "inst") == 0o700 and mode(tmp_path / "inst" / "w.lock") == 0o600
    finally:
        lease.release()


@pytest.mark.slow
def test_the_demo_instance_is_private_under_an_open_umask(tmp_path: Path) -> None:
    # issue 10 finding 7: instance/ was 0755 and its files 0644
    argv = ["sh", "-c", 'umask 000 && exec "$@"', "sh", *flask_argv()]
    with running_server(argv, tmp_path) as srv:
        assert srv.post("/api/v1/players", {"name": "ann"})[0] == 201  # the journal has data
        inst = tmp_path / "instance"
        assert mode(inst) == 0o700
        files = sorted(p.name for p in inst.iterdir() if p.is_file())
        for name in ("worldloop.db", "worldloop.db-wal", "worldloop.db-shm", "admin-token"):
            assert name in files, files
        for name in files:
            assert mode(inst / name) == 0o600, (name, oct(mode(inst / name)))


@pytest.mark.parametrize("word", ["false", "null", "0"])
def test_the_demo_refuses_a_switch_word_as_admin_token(tmp_path: Path, word: str) -> None:
    # issue 10 finding 4: through the demo's environment path, a real process
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in flask_argv()]
    env = child_env(WORLDLOOP_INSTANCE_PATH=str(tmp_path / "i"), WORLDLOOP_ADMIN_TOKEN=word)
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "WORLDLOOP_ADMIN_TOKEN" in last and "unset or empty" in last, done.stderr[-2000:]


def test_the_demo_with_an_empty_admin_token_says_the_admin_api_is_off(tmp_path: Path) -> None:
    with running_server(flask_argv(), tmp_path, env={"WORLDLOOP_ADMIN_TOKEN": ""}) as srv:
        for headers in ({}, {"Authorization": "Bearer false"}):
            status, _, body = srv.post("/api/v1/admin/pause", {}, headers=headers)
            assert status == 403, body
            assert "disabled" in body["error"]["message"]
            assert "WORLDLOOP_ADMIN_TOKEN" in body["error"]["message"]
        assert not (tmp_path / "instance" / "admin-token").exists()
