"""How worldloop opens PostgreSQL connections, so a lost database fails fast instead of hanging.

libpq waits forever by default: a connect to a host whose packets vanish (a blackhole route, a
dead network path) never returns, and a query in flight on such a connection waits for the
kernel's retransmission timeout (about 15 minutes). The loop thread would sit in its journal
write holding the world's lease, so no other runner could take it over, and a /readyz store
check would hang with it. These defaults bound both: ``connect_timeout`` for a connect, TCP
keepalives for an idle connection and ``tcp_user_timeout`` for unacknowledged data. Any of them
set in the store URL's query (``?connect_timeout=2``) wins.

The other side needs a bound too: a runner cut off in the middle of a journal transaction
leaves its server session idle in that transaction, holding the row locks of the world's head,
and PostgreSQL keeps it (its own keepalives wait hours, and behind a proxy or NAT they see a
live peer). The new owner's first journal write would wait on those locks forever.
:data:`SESSION_DEFAULTS` bound it from the server's end as the connection's own settings do
from the runner's: a session idle in a transaction ends after 10 s, and one whose client
vanished in the middle of a statement (the server waits for the rest of it, not idle) ends
when the server's keepalives go unanswered. A URL that sets libpq's ``options`` replaces them.

Every session also names itself (``application_name``, :func:`application_name`): a new owner's
claim ends only sessions that are worldloop's own (store/unblock.py), never another client's.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

APPLICATION_PREFIX = "worldloop"
"""How every worldloop session's ``application_name`` begins (pg_stat_activity shows it)."""

CONNECT_DEFAULTS: Mapping[str, int] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
"""libpq connection parameters (seconds, except tcp_user_timeout in milliseconds)."""

SESSION_DEFAULTS: Mapping[str, int] = {
    "idle_in_transaction_session_timeout": 10_000,
    "tcp_keepalives_idle": 10,
    "tcp_keepalives_interval": 3,
    "tcp_keepalives_count": 3,
}
"""Server settings of every session, sent in libpq's ``options`` (the timeout in milliseconds,
the keepalives in seconds, as for the connection's own)."""


def pg_engine_options(query: Mapping[str, Any], schema: str | None) -> dict[str, Any]:
    """The ``create_engine`` keyword arguments of a PostgreSQL store: :data:`CONNECT_DEFAULTS`
    not already in the URL's ``query``, :data:`SESSION_DEFAULTS` unless it sets ``options``,
    :func:`application_name` unless it sets one, and the schema every table lives in."""
    wanted: dict[str, int | str] = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in query}
    if "application_name" not in query:
        wanted["application_name"] = application_name()
    if "tcp_user_timeout" in wanted and _libpq_version() < 120000:
        del wanted["tcp_user_timeout"]  # unknown to libpq before 12: the connect would fail
    if "options" not in query:
        wanted["options"] = " ".join(f"-c {k}={v}" for k, v in SESSION_DEFAULTS.items())
    options: dict[str, Any] = {"connect_args": wanted}
    if schema:
        options["execution_options"] = {"schema_translate_map": {None: schema}}
    return options


def application_name() -> str:
    """``worldloop <host> <pid>``: :data:`APPLICATION_PREFIX` marks the session as worldloop's
    (a claim ends no other client's session), the host and process tell an operator which runner
    it is (PostgreSQL keeps 63 bytes of it)."""
    return f"{APPLICATION_PREFIX} {socket.gethostname()} {os.getpid()}"[:63]


def _libpq_version() -> int:
    """The libpq psycopg runs on (e.g. 170002), or 0 when psycopg is not psycopg 3."""
    try:
        import psycopg

        return int(psycopg.pq.version())
    except (ImportError, AttributeError):
        return 0
