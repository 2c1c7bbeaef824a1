"""Every ``WORLDLOOP_*`` setting in one place: its default, its coercion, its meaning.

``Settings.from_config(app.config)`` is read once per app at ``init_app`` and frozen; nothing
else reads or coerces a ``WORLDLOOP_*`` key. Values may come as Python values or as the
strings an environment gives (``"20"``, ``"true"``, a JSON list for ``WORLDLOOP_JOBS``); a
value that does not fit is a ConfigError naming the key. Strings are taken verbatim: a secret
such as ``WORLDLOOP_ADMIN_TOKEN`` is never decoded as JSON (``1e5`` stays ``"1e5"``); an empty
value, or none at all, turns the admin API off, and a value that reads as a switch (``false``,
``0``, ``null``...) or is shorter than 16 characters is refused at start, naming the key.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .clock import MAX_RATE_HZ, MIN_RATE_HZ, OverrunPolicy
from .errors import ConfigError
from .sizes import MiB

SNAPSHOT_WRITE_SHARE = 0.2
"""Interim snapshots cost the writer at most this share of the loop's stepping time
(``WORLDLOOP_SNAPSHOT_WRITE_SHARE``): the next one waits for the last one's write time / share
of stepping when that exceeds ``recovery_seconds``. A write is paid every time, the replay it
shortens only at a restart; at 1:1 (as it was) a 100k-creature meadow with 200 players wrote a
7 MB snapshot 84 times a minute, and that work and IO stretched its ticks (tick p90 64 ms, 39
at 0.2: bench/results/snapshot_share.md)."""

log = logging.getLogger("worldloop")

PREFIX = "WORLDLOOP_"

MIN_SECRET_LENGTH = 16
"""The shortest admin token accepted: a token is a secret, not a word someone might guess."""

SWITCH_WORDS = frozenset({"false", "true", "null", "none", "no", "yes", "off", "on", "0", "1"})
"""Values that mean a switch, not a secret: refused as tokens (issue 10: ``false`` must never
turn the admin API on with ``false`` as its token)."""

Autostart = Literal["auto", "eager", "lazy", "never"]
JsonErrors = Literal["worldloop", "all"]
RunnerMode = Literal["process", "thread"]


class Settings(BaseModel):
    """One app's worldloop settings (frozen). Field ``rate_hz`` is key ``WORLDLOOP_RATE_HZ``."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    # -- the world and its clock -------------------------------------------------------------
    world: Any = None
    """World factory: a callable ``factory(config) -> World`` or ``"module:function"``."""
    rate_hz: float = Field(default=20.0, ge=MIN_RATE_HZ, le=MAX_RATE_HZ, allow_inf_nan=False)
    overrun: OverrunPolicy = OverrunPolicy.CATCH_UP
    max_catch_up: int = Field(default=5, ge=0)
    queue_size: int = Field(default=10_000, ge=1)
    max_commands_per_tick: int = Field(default=10_000, ge=1)
    start_paused: bool = False
    autostart: Autostart = "auto"
    shutdown_timeout: float = Field(default=2.0, ge=0, allow_inf_nan=False)
    handle_signals: bool = True

    # -- durability and ownership ------------------------------------------------------------
    store_url: str | None = None
    """``sqlite:///path``, ``postgresql+psycopg://…``, ``memory://`` (no journal) or
    ``memory://NAME`` (journal in process memory); None: the instance's ``worldloop.db``."""
    store_schema: str | None = None
    snapshot_every: int = Field(default=1000, ge=0)
    recovery_seconds: float = Field(default=0.25, ge=0, allow_inf_nan=False)
    """Also snapshot once the ticks since the last snapshot took this many seconds to step, so a
    restart replays about that long whatever the world's size (0: every ``snapshot_every``)."""
    snapshot_write_share: float = Field(default=SNAPSHOT_WRITE_SHARE, gt=0, le=1)
    """The most of the loop's stepping time interim snapshots may cost to write: the next waits
    for the last one's write time / share of stepping if that is longer than the above."""
    hash_every: int = Field(default=100, ge=0)
    journal_retention: int = Field(default=3000, ge=0)
    store_retry_seconds: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    group_commit: bool = True
    """The worlds of one process on one SQL store journal their ticks in shared transactions
    (one fsync for all the worlds that ticked together; worldloop.store.group). A lone world
    commits at once as before; False: one transaction per world per tick."""
    lease_wait: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """Seconds a new process waits for the previous runner; None: 10 s under gunicorn."""
    bus_url: str = "local://"
    """How commands and snapshots travel between the API and the loop (``local://``)."""
    redis_url: str | None = None
    """``redis://host:port/db``: the scale-out mode (SCALEOUT.md, worldloop.scaleout) with a
    PostgreSQL store: every worker of every host serves each world, the holder of its Redis
    lease runs it, commands and snapshots travel on Redis Streams. None: the embedded mode."""
    redis_prefix: str = "wl:"
    """Start of every Redis key of this deployment (two deployments on one Redis differ here)."""
    lease_ttl: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    """Seconds a Redis lease lives unrenewed: a dead runner's worlds move after about this."""
    standby_poll: float = Field(default=0.5, gt=0, allow_inf_nan=False)
    """Seconds between a standby worker's tries for a world's free lease."""
    runner_capacity: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    """The Redis mode: this process's weight among the runners (worldloop.fleet): worlds are
    placed in proportion to it. 0: it serves every world but runs none (a web-only worker
    beside dedicated ``worldloop runner`` processes with a higher weight)."""
    runner: RunnerMode = "process"
    """``process``: in a server (``flask run``, gunicorn, any ``-w``) the world runs in one
    runner process of its own and every web worker serves it (worldloop.runner); ``thread``:
    the single-process mode, the world on a thread of the serving process. Apps that are not
    served (tests, scripts, the CLI) always run it on a thread."""
    runner_app: str | None = None
    """How the runner loads the app (``module:create_app()``); None: as gunicorn or
    ``flask --app`` were told."""
    runner_fork: bool = True
    """Start the first runner as a fork of the web process loading the app, where that is safe
    (worldloop.runner.fork): it has imported everything already, so a restart does not wait for
    a second interpreter's imports (bench/results/recovery.md); False: always a fresh ``python
    -m worldloop.runner`` interpreter."""
    gateway: str | None = "auto"
    """Where the runner starts the stream gateway (worldloop.gateway) beside it: live viewers
    (SSE, WebSocket) and command waits served by one asyncio process, not a web worker's thread
    each; web workers answer ``GET /api/v1/stream`` with a 307 to it. ``auto``: the port after
    the web server's own, same host (gunicorn on :8000 → :8001, ``flask run`` on :5000 → :5001),
    used once it listens (worldloop.gateway.address); ``host:port``: there; ``off``: streams and
    waits stay in the workers."""
    gateway_processes: int = Field(default=1, ge=1, le=16)
    """How many gateway processes serve ``gateway``'s address (SO_REUSEPORT: the kernel
    spreads connections among them), each an event loop of its own: more than one when players'
    command waits keep one gateway's loop busy (worldloop.gateway.supervise, bench/gateway.py)."""
    gateway_url: str | None = None
    """Public base URL of the gateway (behind a proxy: ``https://example.org``); None: built
    from ``gateway``'s port and the host the client asked for."""
    web_nice: int = Field(default=10, ge=0, le=19)
    """With a runner process: how many nice steps below the runner the web workers' request
    threads and the stream gateway run (worldloop.priority), so that under saturating reads the
    tick gets a core first (bench/runner_prio.py). Raising a nice value needs no privileges; the
    runner and the threads that start it keep theirs. 0: everyone at the same priority."""

    # -- many worlds (worldloop.host) -------------------------------------------------------------
    max_worlds: int = Field(default=100, ge=0)
    """Most worlds one server hosts beside its default world (POST /api/v1/worlds past it: 409)."""
    max_worlds_per_kind: int = Field(default=100, ge=0)
    """Most worlds of one kind (POST /api/v1/worlds past it: 409)."""
    world_create_rate: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    """Worlds created per second, server-wide, after the burst (past it: 429 + Retry-After)."""
    world_create_burst: float = Field(default=20, ge=1, allow_inf_nan=False)
    hibernate_after: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """Seconds an extra world may be idle (no players, no command, no job due) before it is
    snapshotted and unloaded until a request or a due job wakes it (worldloop.hibernation);
    0: never. A kind may declare its own (``loop.kind(name, hibernate_after=...)``)."""
    loop_threads: int | None = Field(default=None, ge=0)
    """Threads that run the extra worlds' loops, however many worlds there are (a shared
    worldloop.looppool.LoopPool); None: the CPUs this process may use, at most 4; 0: a loop
    thread per world, as before the pool. The default world keeps a thread of its own."""

    # -- memory bounds (estimated bytes, worldloop.sizes) ----------------------------------------
    queue_bytes: int = Field(default=64 * MiB, ge=1)
    """Payload bytes of the commands waiting in the queue (beside ``queue_size``); full = 503."""
    command_history_bytes: int = Field(default=32 * MiB, ge=0)
    """Recent tickets kept for ``GET /commands/{id}``; older ones are answered from the journal."""
    idempotency_keys: int = Field(default=10_000, ge=0)
    """Idempotency keys remembered in memory (beside their age); older keys are answered from
    the journal while it keeps their command."""
    idempotency_seconds: float = Field(default=600.0, ge=0, allow_inf_nan=False)
    """Seconds an idempotency key is remembered in memory (beside the count)."""
    snapshot_cache_bytes: int = Field(default=32 * MiB, ge=0)
    """Serialized frames one snapshot keeps for its readers (past it: built per reader)."""
    rate_limit_bytes: int = Field(default=16 * MiB, ge=0)
    """Token buckets of each rate limiter (least recently used go first)."""

    # -- jobs ------------------------------------------------------------------------------------
    jobs: list[dict[str, Any]] | None = None
    job_workers: int = Field(default=4, ge=1)
    task_timeout: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    """Seconds an offloaded task (``World.request_task``) may take before it is reported
    timed out; its late result is then ignored."""

    # -- what init_app installs -----------------------------------------------------------------
    api: bool = True
    """The REST API: ``/api/v1/world`` and, for worlds with players, players/commands/admin."""
    observe: bool = True
    """``/healthz``, ``/readyz``, ``/metrics``, the live stream and HTTP latency metrics."""
    docs: bool = True
    """``/openapi.json`` and the browsable ``/docs``."""
    viewer: bool = False
    """The live viewer at ``/`` (off by default: ``/`` usually belongs to the host app)."""
    json_errors: JsonErrors = "worldloop"
    """``worldloop``: JSON for worldloop's errors and routes only; ``all``: every error."""

    # -- the API ---------------------------------------------------------------------------------
    admin_token: str | None = None
    rate_limit: float = Field(default=20.0, gt=0, allow_inf_nan=False)
    rate_burst: float = Field(default=40, ge=1, allow_inf_nan=False)
    join_rate_limit: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    join_rate_burst: float = Field(default=20, ge=1, allow_inf_nan=False)
    ratelimit_url: str | None = None
    """Where the rate limits keep their buckets: ``memory://`` (each process its own) or
    ``redis://host:port/db?prefix=…`` (one bucket per key for the whole deployment). None:
    ``WORLDLOOP_REDIS_URL`` with ``WORLDLOOP_REDIS_PREFIX`` in the Redis mode, else memory."""
    trusted_proxies: int = Field(default=0, ge=0, le=10)
    """Proxies in front whose X-Forwarded-For/-Proto/-Host are trusted (werkzeug ProxyFix);
    0 trusts none. Rate limits key on the client address this yields."""
    max_body_bytes: int = Field(default=16 * 1024, ge=64)
    command_wait: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    long_poll_max: float = Field(default=30.0, ge=0, allow_inf_nan=False)

    # -- observation -----------------------------------------------------------------------------
    configure_logging: bool = True
    log_json: bool | None = None
    log_level: str | None = None
    ready_max_tick_age: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Seconds since the last tick before the loop counts as stalled (None: max(2 s, 10 ticks))."""
    ready_max_overrun_ratio: float = Field(default=0.25, ge=0, le=1)
    ready_min_window: int = Field(default=20, ge=1)
    ready_store_check_ttl: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    stream_max_clients: int = Field(default=64, ge=0)
    """Streams per process at most; lowered to the server's threads minus the reserve."""
    stream_reserve_threads: int = Field(default=2, ge=1)
    """Request threads never given to streams (gunicorn gthread): the API and probes keep them."""
    stream_default_limit: int = Field(default=2000, ge=0)
    stream_max_limit: int = Field(default=20000, ge=0)
    stream_max_seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """None: unbounded on threaded servers, 10 s on one-request-per-worker servers."""
    stream_stats_every: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    frame_keyframe_every: int = Field(default=60, ge=1)
    """Binary frames (the gateway's WebSocket): a keyframe for everyone every this many frames
    of a viewport class; between them, deltas against each client's last frame."""

    @field_validator("autostart", mode="before")
    @classmethod
    def _autostart(cls, value: Any) -> Any:
        if value is True:
            return "auto"
        if value in (False, None, "manual"):
            return "never"
        return value

    @field_validator("jobs", mode="before")
    @classmethod
    def _jobs(cls, value: Any) -> Any:
        if isinstance(value, str | bytes):
            if not value.strip():
                return None
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not a JSON list of job objects: {exc}") from None
        return value

    @field_validator("admin_token", mode="before")
    @classmethod
    def _secret(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            raise ValueError("must be a string (taken verbatim); unset or empty turns it off")
        if value.strip().lower() in SWITCH_WORDS:
            raise ValueError(
                "looks like an on/off switch, not a secret; leave it unset or empty to turn "
                f"the admin API off, or give a random token of at least {MIN_SECRET_LENGTH} "
                "characters to turn it on"
            )
        if len(value) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"is {len(value)} characters; a token must be a real secret of at least "
                f"{MIN_SECRET_LENGTH} (e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'); leave it unset or empty to turn the "
                "admin API off"
            )
        return value

    @field_validator("world", mode="before")
    @classmethod
    def _world(cls, value: Any) -> Any:
        if value is None or callable(value) or isinstance(value, str):
            return value
        raise ValueError("must be a callable or a 'module:function' string")

    @classmethod
    def key(cls, field: str) -> str:
        """The config key of ``field``: ``rate_hz`` → ``WORLDLOOP_RATE_HZ``."""
        return PREFIX + field.upper()

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every key with its default, as ``app.config.setdefault`` wants them."""
        return {cls.key(name): f.default for name, f in cls.model_fields.items()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Read, coerce and check every ``WORLDLOOP_*`` key of ``config``.

        Unknown ``WORLDLOOP_*`` keys are logged (a typo should not pass in silence) but do
        not fail: host apps and worlds keep their own keys beside ours.
        """
        values: dict[str, Any] = {}
        for key, value in config.items():
            if not isinstance(key, str) or not key.startswith(PREFIX):
                continue
            name = key.removeprefix(PREFIX).lower()
            if name in cls.model_fields:
                values[name] = value
            elif name not in _NOT_SETTINGS:
                log.warning("worldloop: unknown setting %s is ignored", key)
        if values.get("admin_token") is None and os.environ.get(cls.key("admin_token")):
            # A secret left out of the config comes from the environment, verbatim.
            values["admin_token"] = os.environ[cls.key("admin_token")]
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else "?"
            msg = str(first["msg"]).removeprefix("Value error, ")
            shown = "" if field in _SECRETS else f"={values.get(field)!r}"  # never log a secret
            raise ConfigError(
                f"{cls.key(field)}{shown}: {msg}", details={"key": cls.key(field)}
            ) from None


_SECRETS = frozenset({"admin_token"})
"""Settings whose values never appear in an error message or a log line."""

_NOT_SETTINGS = frozenset({"instance_path", "test_pg_url"})
"""``WORLDLOOP_*`` names that are not app settings (read from the environment by the demo
and the test suite)."""


def env_config(environ: Mapping[str, str], prefixes: tuple[str, ...] = (PREFIX,)) -> dict[str, Any]:
    """The environment's keys with these prefixes, as strings: Settings coerces them."""
    return {k: v for k, v in environ.items() if k.startswith(prefixes)}
