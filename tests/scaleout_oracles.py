"""The journal oracles of ../shared/SCALEOUT.md, read straight from a test's PostgreSQL schema:
every acknowledged command journaled exactly once, and ticks contiguous up to the head; and
who runs which world, read from the leases (the placement tests and bench)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import TYPE_CHECKING

from tests.store_support import PG_DSN

if TYPE_CHECKING:
    import redis


def journal_of(
    schema: str, world: str | None = None
) -> tuple[dict[str, int], list[int], int | None]:
    """How often each command id is journaled, the ticks with a hash, and the head tick, of
    ``world`` (None: the schema's only world)."""
    import psycopg

    where, args = ("", ()) if world is None else (" WHERE world = %s", (world,))
    with psycopg.connect(PG_DSN) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        counts = dict(
            conn.execute(
                f"SELECT command_id, count(*) FROM worldloop_commands{where} GROUP BY command_id",
                args,
            ).fetchall()
        )
        ticks = [
            r[0]
            for r in conn.execute(f"SELECT tick FROM worldloop_hashes{where} ORDER BY tick", args)
        ]
        head = conn.execute(f"SELECT tick FROM worldloop_heads{where}", args).fetchone()
    return counts, ticks, None if head is None else int(head[0])


def check_journal(schema: str, acked: Collection[str], world: str | None = None) -> int:
    """Assert the journal oracles of ``world`` (None: the only one) for the acknowledged
    command ids ``acked``; the head tick, for the checks a test adds (replay up to it)."""
    counts, ticks, head = journal_of(schema, world)
    missing = [i for i in acked if counts.get(i) != 1]
    assert not missing, f"{len(missing)} acknowledged commands not journaled exactly once"
    assert not counts or max(counts.values()) == 1, "a command journaled twice"
    assert head is not None and ticks == list(range(ticks[0], head + 1)), "a gap in ticks"
    return head


def holders(client: redis.Redis, prefix: str, names: list[str]) -> dict[str, int | None]:
    """Each world's runner pid, as its lease says (None: free)."""
    raw = client.mget([f"{prefix}{n}:lease" for n in names])
    return {
        n: None if v is None else int(v.decode().split(" pid ")[1].split()[0])
        for n, v in zip(names, raw, strict=True)
    }


def balanced(held: dict[str, int | None], runners: int) -> dict[str, int] | None:
    """``held`` if every world is held and the loads of ``runners`` runners differ by ≤ 1."""
    if any(p is None for p in held.values()):
        return None
    loads = Counter(held.values())
    if len(loads) != runners or max(loads.values()) - min(loads.values()) > 1:
        return None
    return {w: p for w, p in held.items() if p is not None}
