"""How worldloop opens PostgreSQL connections, so a lost database fails fast instead of hanging.

libpq waits forever by default: a connect to a host whose packets vanish (a blackhole route, a
dead network path) never returns, and a query in flight on such a connection waits for the
kernel's retransmission timeout (about 15 minutes). The loop thread would sit in its journal
write holding the world's lease, so no other runner could take it over, and a /readyz store
check would hang with it. These defaults bound both: ``connect_timeout`` for a connect, TCP
keepalives for an idle connection and ``tcp_user_timeout`` for unacknowledged data. Any of them
set in the store URL's query (``?connect_timeout=2``) wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONNECT_DEFAULTS: Mapping[str, int] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
"""libpq connection parameters (seconds, except tcp_user_timeout in milliseconds)."""


def pg_engine_options(query: Mapping[str, Any], schema: str | None) -> dict[str, Any]:
    """The ``create_engine`` keyword arguments of a PostgreSQL store: :data:`CONNECT_DEFAULTS`
    not already in the URL's ``query``, and the schema every table lives in."""
    wanted = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in query}
    if "tcp_user_timeout" in wanted and _libpq_version() < 120000:
        del wanted["tcp_user_timeout"]  # unknown to libpq before 12: the connect would fail
    options: dict[str, Any] = {"connect_args": wanted}
    if schema:
        options["execution_options"] = {"schema_translate_map": {None: schema}}
    return options


def _libpq_version() -> int:
    """The libpq psycopg runs on (e.g. 170002), or 0 when psycopg is not psycopg 3."""
    try:
        import psycopg

        return int(psycopg.pq.version())
    except (ImportError, AttributeError):
        return 0
