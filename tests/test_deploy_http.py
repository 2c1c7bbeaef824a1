"""What a proxy and a client expect of the HTTP layer, and how a server's capacity is read.

Conditional GET through Werkzeug's own parsing, Retry-After on every 503/429, no-store on
probes and streams, rate limits by the real client address behind a trusted proxy; the stream
capacity of each gunicorn worker class; the preflight refusals.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask

from tests.test_api_v1 import make_app
from worldloop.hosting import capacity
from worldloop.preflight import Refused, check_gunicorn


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    flask_app = make_app(tmp_path)
    yield flask_app
    flask_app.extensions["worldloop"].stop()


@pytest.mark.parametrize("path", ["/api/v1/world/snapshot", "/api/v1/frame"])
def test_conditional_get_reads_if_none_match_as_werkzeug_parses_it(app: Flask, path: str) -> None:
    rt = app.extensions["worldloop"].runtime
    rt.pause()
    client = app.test_client()
    first = client.get(path)
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert etag.startswith('"') and first.headers["Cache-Control"] == "no-cache"
    matching = [etag, f'"nope", {etag}', f"W/{etag}", "*", f'W/"x",   {etag} ,"y"']
    for header in matching:
        resp = client.get(path, headers={"If-None-Match": header})
        assert resp.status_code == 304, header
        assert resp.data == b"" and resp.headers["ETag"] == etag
    for header in ['"nope"', '"meadow-999999999"', 'W/"other"', ""]:
        resp = client.get(path, headers={"If-None-Match": header})
        assert resp.status_code == 200, header
    rt.resume()


def test_probes_and_streams_are_never_stored(app: Flask) -> None:
    client = app.test_client()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).headers["Cache-Control"] == "no-store", path
    resp = client.get("/api/v1/stream", buffered=False)
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Accel-Buffering"] == "no"
    resp.close()


def test_every_503_says_when_to_retry_readyz_included(app: Flask) -> None:
    client = app.test_client()
    app.extensions["worldloop"].stop()
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
    resp = client.get("/api/v1/stream")
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"


def test_stream_slots_refuse_past_the_cap_with_retry_after(tmp_path: Path) -> None:
    flask_app = make_app(tmp_path, WORLDLOOP_STREAM_MAX_CLIENTS=1)
    try:
        client = flask_app.test_client()
        held = client.get("/api/v1/stream", buffered=False)
        assert held.status_code == 200
        refused = client.get("/api/v1/stream")
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert refused.json["error"]["code"] == "too_many_streams"
        held.close()
        again = client.get("/api/v1/stream", buffered=False)
        assert again.status_code == 200  # the slot came back when the first stream closed
        again.close()
    finally:
        flask_app.extensions["worldloop"].stop()


def join_from(client: Any, address: str, forwarded: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    resp = client.post(
        "/api/v1/players",
        json={"name": "p"},
        headers=headers,
        environ_base={"REMOTE_ADDR": address},
    )
    return int(resp.status_code)


def test_behind_a_trusted_proxy_each_client_has_its_own_join_bucket(tmp_path: Path) -> None:
    flask_app = make_app(
        tmp_path, WORLDLOOP_TRUSTED_PROXIES=1, WORLDLOOP_JOIN_RATE_BURST=2,
        WORLDLOOP_JOIN_RATE_LIMIT=0.001,
    )  # fmt: skip
    try:
        client = flask_app.test_client()
        # nginx on 127.0.0.1 forwards for two clients: each gets its own burst of two
        assert [join_from(client, "127.0.0.1", "203.0.113.7") for _ in range(3)] == [201, 201, 429]
        assert join_from(client, "127.0.0.1", "198.51.100.9") == 201
    finally:
        flask_app.extensions["worldloop"].stop()


def test_without_trust_forwarded_headers_are_ignored_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from worldloop.api import proxy

    proxy._warned.clear()
    flask_app = make_app(tmp_path, WORLDLOOP_JOIN_RATE_BURST=2, WORLDLOOP_JOIN_RATE_LIMIT=0.001)
    try:
        client = flask_app.test_client()
        with caplog.at_level(logging.WARNING, logger="worldloop"):
            # a client cannot pick its own bucket by sending the header itself
            codes = [join_from(client, "192.0.2.1", f"10.0.0.{i}") for i in range(3)]
        assert codes == [201, 201, 429]
        said = [r for r in caplog.records if "WORLDLOOP_TRUSTED_PROXIES=0" in r.getMessage()]
        assert len(said) == 1
        resp = flask_app.test_client().post(
            "/api/v1/players", json={"name": "q"}, environ_base={"REMOTE_ADDR": "192.0.2.1"}
        )
        assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
    finally:
        flask_app.extensions["worldloop"].stop()


def fake_worker(klass: str, *, threads: int = 1, workers: int = 1, age: int = 1) -> Any:
    """A stand-in with the attributes gunicorn's worker has (cfg.worker_class is the class)."""
    module = {"sync": "sync", "gthread": "gthread", "gevent": "ggevent"}[klass]
    worker_class = type("W", (), {"__module__": f"gunicorn.workers.{module}"})
    cfg = SimpleNamespace(worker_class=worker_class, threads=threads, workers=workers)
    return SimpleNamespace(cfg=cfg, alive=True, age=age, pid=0)


def test_capacity_follows_the_worker_class_and_its_threads() -> None:
    sync = capacity(max_streams=64, reserve=2, worker=fake_worker("sync"))
    assert (sync.worker_class, sync.streams) == ("sync", 0)
    assert "refused with 503" in sync.describe()
    eight = capacity(max_streams=64, reserve=2, worker=fake_worker("gthread", threads=8))
    assert (eight.threads, eight.streams) == (8, 6)
    big = capacity(max_streams=64, reserve=2, worker=fake_worker("gthread", threads=200))
    assert big.streams == 64
    tiny = capacity(max_streams=64, reserve=2, worker=fake_worker("gthread", threads=2))
    assert tiny.streams == 0
    dev = capacity(max_streams=64, reserve=2, multithread=True)  # no gunicorn: werkzeug
    assert (dev.server, dev.streams) == ("werkzeug", 64)


def test_preflight_refuses_what_the_mode_cannot_serve() -> None:
    lock = "file:///srv/instance/worldloop.db.lock"
    check_gunicorn(lock, "auto", worker=fake_worker("gthread", threads=16))
    check_gunicorn(lock, "lazy", worker=fake_worker("sync", workers=2))  # one wins the lease
    check_gunicorn("redis://h/0", "auto", worker=fake_worker("gthread", workers=4))
    with pytest.raises(Refused, match=r"-w 2 on the embedded \(SQLite\) store") as first:
        check_gunicorn(lock, "auto", worker=fake_worker("sync", workers=2))
    assert first.value.details["quiet"] is False
    with pytest.raises(Refused) as sibling:
        check_gunicorn(lock, "auto", worker=fake_worker("sync", workers=2, age=2))
    assert sibling.value.details["quiet"] is True  # said once, by the first worker
    with pytest.raises(Refused, match="in-memory"):
        check_gunicorn("memory://", "lazy", worker=fake_worker("gthread", workers=2))
    with pytest.raises(Refused, match="-k gevent cannot host"):
        check_gunicorn(lock, "auto", worker=fake_worker("gevent"))
