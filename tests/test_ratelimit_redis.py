"""The Redis limiter beyond the shared contract: its keys live under the deployment's prefix and
expire once they would be full again; with no clock given it uses the Redis server's; a Redis
that goes away lets requests through (fail open: logged once, counted) without a wait per
request, and limits apply again once it is back; an app picks it by settings."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.redis_support import REDIS_URL, drop_prefix, require_redis
from tests.support import free_port
from worldloop.api.errors import RateLimited
from worldloop.api.ratelimit import RateLimiter, open_limiter
from worldloop.api.ratelimit_redis import RedisLimiter
from worldloop.metrics import RATE_LIMIT_UNCHECKED

pytestmark = pytest.mark.redis


def test_buckets_live_under_the_prefix_and_expire_when_full_again(prefix: str) -> None:
    now = [500.0]
    lim = open_limiter(f"{REDIS_URL}?prefix={prefix}", "token", 2.0, 4, clock=lambda: now[0])
    assert isinstance(lim, RedisLimiter)
    lim.hit("abc")
    client = redis.Redis.from_url(REDIS_URL)
    key = f"{prefix}ratelimit:token:abc"
    assert [k.decode() for k in client.scan_iter(match=f"{prefix}*")] == [key]
    assert 0 < client.pttl(key) <= 500  # one token short: full again after 0.5 s
    for _ in range(3):
        lim.hit("abc")
    assert 1500 < client.pttl(key) <= 2000  # empty: full again after 2 s
    client.close()


def test_the_redis_servers_clock_by_default(prefix: str) -> None:
    lim = open_limiter(f"{REDIS_URL}?prefix={prefix}", "join", 0.01, 3)
    for _ in range(3):
        lim.hit("ip:10.0.0.1")
    with pytest.raises(RateLimited) as err:
        lim.hit("ip:10.0.0.1")
    assert 99.0 < err.value.retry_after <= 100.0


def test_a_redis_outage_fails_open_once_logged_and_counted(
    own_redis: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    url, start = own_redis
    proc = start()
    mono = [0.0]
    lim = RedisLimiter.from_url(url + "?prefix=t:", "token", 0.001, 2)
    lim._monotonic = lambda: mono[0]
    tries = [0]
    take = lim._take

    def counted(*args: Any, **kw: Any) -> Any:
        tries[0] += 1
        return take(*args, **kw)

    lim._take = counted  # type: ignore[method-assign]
    lim.hit("k")
    lim.hit("k")
    with pytest.raises(RateLimited):
        lim.hit("k")
    unchecked = RATE_LIMIT_UNCHECKED.labels("token")._value.get()

    proc.kill()
    proc.wait(10)
    with caplog.at_level(logging.WARNING, logger="worldloop.ratelimit"):
        for _ in range(5):
            lim.hit("k")  # let through, not a 500, not a 429
    assert tries[0] == 4  # one try reached the dead Redis; the rest waited out the backoff
    assert RATE_LIMIT_UNCHECKED.labels("token")._value.get() == unchecked + 5
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "fail open" in errors[0].getMessage()

    start()
    mono[0] += lim.backoff + 0.01
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="worldloop.ratelimit"):
        lim.hit("k")  # the restarted Redis lost the bucket: a full one, limits apply again
        lim.hit("k")
        with pytest.raises(RateLimited):
            lim.hit("k")
    assert tries[0] == 7
    assert any("answers again" in r.getMessage() for r in caplog.records)


def make_app(tmp_path: Path, **config: Any) -> Any:
    from worldloop.demo import create_app

    os.environ.pop("WERKZEUG_RUN_MAIN", None)
    base = {
        "TESTING": True,
        "WORLDLOOP_HANDLE_SIGNALS": False,
        "WORLDLOOP_STORE_URL": "memory://",
        "WORLDLOOP_RATE_HZ": 50.0,
        "MEADOW_ENTITIES": 50,
        **config,
    }
    return create_app(base, instance_path=str(tmp_path / "instance"))


def test_an_app_takes_the_limiter_from_its_settings(tmp_path: Path) -> None:
    from worldloop.api.common import limiter, limiter_url

    require_redis()
    prefix = f"wltest-{uuid.uuid4().hex[:12]}:"
    plain = make_app(tmp_path / "a", WORLDLOOP_AUTOSTART="never")
    with plain.test_request_context():
        assert limiter_url() == "memory://"
        assert isinstance(limiter("token"), RateLimiter)
    shared = make_app(
        tmp_path / "b",
        WORLDLOOP_RATELIMIT_URL=f"{REDIS_URL}?prefix={prefix}",
        WORLDLOOP_JOIN_RATE_LIMIT=0.01,
        WORLDLOOP_JOIN_RATE_BURST=2,
        WORLDLOOP_RATE_LIMIT=0.01,
        WORLDLOOP_RATE_BURST=3,
    )
    try:
        with shared.test_request_context():
            for kind in ("token", "join", "world_create"):
                assert isinstance(limiter(kind), RedisLimiter)
        c = shared.test_client()
        joins = [c.post("/api/v1/players", json={"name": f"p{i}"}) for i in range(3)]
        assert [r.status_code for r in joins] == [201, 201, 429]
        assert int(joins[2].headers["Retry-After"]) == 100
        assert joins[2].json["error"]["code"] == "rate_limited"
        auth = {"Authorization": f"Bearer {joins[0].json['token']}"}
        statuses = [
            c.post("/api/v1/commands", json={"type": "stop"}, headers=auth).status_code
            for _ in range(5)
        ]
        assert statuses == [202, 202, 202, 429, 429]
        client = redis.Redis.from_url(REDIS_URL)
        keys = sorted(k.decode() for k in client.scan_iter(match=f"{prefix}*"))
        client.close()
        assert len(keys) == 2 and keys[0] == f"{prefix}ratelimit:join:ip:127.0.0.1"
        assert keys[1].startswith(f"{prefix}ratelimit:token:")
    finally:
        shared.extensions["worldloop"].stop()
        drop_prefix(prefix)


def test_the_api_serves_on_while_the_limiters_redis_is_down(tmp_path: Path) -> None:
    """Nothing listens at the limiter's URL: joins and commands are answered as usual (no
    500, no 429), and every request that went unchecked is counted."""
    dead = f"redis://127.0.0.1:{free_port()}/0?prefix=gone:"
    app = make_app(
        tmp_path, WORLDLOOP_RATELIMIT_URL=dead, WORLDLOOP_RATE_BURST=1, WORLDLOOP_RATE_LIMIT=0.01
    )
    try:
        before = {k: RATE_LIMIT_UNCHECKED.labels(k)._value.get() for k in ("join", "token")}
        c = app.test_client()
        joined = c.post("/api/v1/players", json={"name": "ann"})
        assert joined.status_code == 201, joined.json
        auth = {"Authorization": f"Bearer {joined.json['token']}"}
        statuses = [
            c.post("/api/v1/commands", json={"type": "stop"}, headers=auth).status_code
            for _ in range(4)
        ]
        assert statuses == [202] * 4  # burst 1, but unchecked: let through
        assert RATE_LIMIT_UNCHECKED.labels("join")._value.get() == before["join"] + 1
        assert RATE_LIMIT_UNCHECKED.labels("token")._value.get() == before["token"] + 4
    finally:
        app.extensions["worldloop"].stop()
