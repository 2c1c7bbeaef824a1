"""One scale-out worker for the failover tests, without HTTP: a Drift world served and, while
it holds the lease, run by this process. ``python -m tests.scaleout_node REDIS PREFIX PG SCHEMA``;
prints ``ready`` once serving, logs to stderr, stops on SIGTERM (handing the world over)."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from tests.durability_app import Drift
from worldloop.scaleout import scaleout_runtime

TTL = 1.5
POLL = 0.2
RATE_HZ = 50.0


def main() -> None:
    redis_url, prefix, pg_url, schema = sys.argv[1:5]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    rt = scaleout_runtime(
        Drift(particles=8, seed=5),
        redis_url=redis_url,
        store_url=pg_url,
        schema=schema,
        prefix=prefix,
        ttl=TTL,
        poll=POLL,
        owner_options={
            "rate_hz": RATE_HZ,
            "snapshot_every": 100,
            "hash_every": 1,
            "retention_ticks": 1_000_000,
            "store_retry_seconds": 1.0,
        },
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rt.start()
    print("ready", flush=True)
    stop.wait()
    rt.stop(5.0)


if __name__ == "__main__":
    main()
