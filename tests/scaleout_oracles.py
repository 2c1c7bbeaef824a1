"""The journal oracles of ../shared/SCALEOUT.md, read straight from a test's PostgreSQL schema:
every acknowledged command journaled exactly once, and ticks contiguous up to the head."""

from __future__ import annotations

from collections.abc import Collection

from tests.store_support import PG_URL

DSN = PG_URL.replace("postgresql+psycopg://", "postgresql://")


def journal_of(schema: str) -> tuple[dict[str, int], list[int], int | None]:
    """How often each command id is journaled, the ticks with a hash, and the head tick."""
    import psycopg

    with psycopg.connect(DSN) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        counts = dict(
            conn.execute(
                "SELECT command_id, count(*) FROM worldloop_commands GROUP BY command_id"
            ).fetchall()
        )
        ticks = [r[0] for r in conn.execute("SELECT tick FROM worldloop_hashes ORDER BY tick")]
        head = conn.execute("SELECT tick FROM worldloop_heads").fetchone()
    return counts, ticks, None if head is None else int(head[0])


def check_journal(schema: str, acked: Collection[str]) -> int:
    """Assert the journal oracles for the acknowledged command ids ``acked``; the head tick,
    for the checks a test adds (replay up to it)."""
    counts, ticks, head = journal_of(schema)
    missing = [i for i in acked if counts.get(i) != 1]
    assert not missing, f"{len(missing)} acknowledged commands not journaled exactly once"
    assert max(counts.values()) == 1, "a command journaled twice"
    assert head is not None and ticks == list(range(ticks[0], head + 1)), "a gap in ticks"
    return head
