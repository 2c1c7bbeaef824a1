"""A PostgreSQL that never answers (a listener that takes the connection and stays silent, as
a host behind a blackhole looks to a connect) fails the store's open with a StoreError within
the connect timeout instead of hanging the caller; a timeout in the store URL wins over the
default."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from worldloop.errors import StoreError
from worldloop.store.pg_options import APPLICATION_PREFIX, CONNECT_DEFAULTS, pg_engine_options
from worldloop.store.sql import SqlStore


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener never accepts: the TCP handshake completes, no reply ever comes."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


def open_in_thread(url: str) -> tuple[BaseException | None, float]:
    """Open a store at ``url`` on a thread (the test never hangs on it): its error and how
    long it took; the thread is given 60 s."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            SqlStore(url).open()
            result.append(None)
        except BaseException as exc:
            result.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert result, "opening the store hung past 60 s"
    return result[0], time.monotonic() - started


def test_a_silent_server_fails_the_open_instead_of_hanging(silent_port: int) -> None:
    error, took = open_in_thread(f"postgresql+psycopg://postgres@127.0.0.1:{silent_port}/test")
    assert isinstance(error, StoreError) and "timeout" in str(error).lower()
    print(f"refused after {took:.1f} s (connect_timeout {CONNECT_DEFAULTS['connect_timeout']} s)")


def test_the_urls_own_timeout_wins(silent_port: int) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{silent_port}/test?connect_timeout=2"
    error, _ = open_in_thread(url)
    assert isinstance(error, StoreError)
    options = pg_engine_options({"connect_timeout": "2"}, "s")
    assert "connect_timeout" not in options["connect_args"]
    assert options["connect_args"]["tcp_user_timeout"] == CONNECT_DEFAULTS["tcp_user_timeout"]
    assert options["execution_options"] == {"schema_translate_map": {None: "s"}}


def test_every_session_names_itself_worldloop_unless_the_url_names_it() -> None:
    """A claim ends only worldloop's own sessions (store/unblock.py): they must be told apart."""
    name = pg_engine_options({}, None)["connect_args"]["application_name"]
    assert name.startswith(f"{APPLICATION_PREFIX} ") and name.endswith(f" {os.getpid()}")
    assert len(name) <= 63  # what PostgreSQL keeps
    own = pg_engine_options({"application_name": "mine"}, None)["connect_args"]
    assert "application_name" not in own  # the URL's query passes it to libpq itself


@pytest.mark.postgres
def test_a_session_left_idle_in_a_transaction_is_ended_by_the_server(schema: str) -> None:
    """A runner cut off mid-transaction must not hold the world's rows forever: the server ends
    its session (10 s idle by default, or by its keepalives; a URL's own ``options`` wins,
    here 0.3 s)."""
    import sqlalchemy.exc

    from tests.store_support import PG_URL, pg_session_alive
    from tests.support import wait_for

    store = SqlStore(PG_URL, schema=schema)
    try:
        with store.engine.connect() as conn:
            shown = conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar()
            probes = conn.exec_driver_sql("SHOW tcp_keepalives_count").scalar()
        assert (shown, probes) == ("10s", "3")
    finally:
        store.close()

    url = f"{PG_URL}?options=-c%20idle_in_transaction_session_timeout%3D300"
    store = SqlStore(url, schema=schema)
    try:
        with store.engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()  # a transaction begun

            wait_for(
                lambda: not pg_session_alive(pid),
                10,
                0.05,
                "the server to end the idle transaction's session",
            )
            with pytest.raises(sqlalchemy.exc.DBAPIError, match="idle-in-transaction timeout"):
                conn.exec_driver_sql("SELECT 1")
    finally:
        store.close()
