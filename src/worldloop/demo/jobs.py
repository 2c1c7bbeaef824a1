"""The demo's scheduled jobs: a nightly grass re-seeding (world job, cron) and a leaderboard
written every minute (background job), served by GET /api/v1/leaderboard.

They rely on two world hooks: ``reseed_grass()`` (loop thread) and the static
``leaderboard(snapshot, limit)`` (reads only a snapshot).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app

from ..api.declare import Reply, operation
from ..api.errors import api_error
from ..extension import WorldLoop
from ..files import private_dir
from ..jobs import JobContext
from ..snapshot import Snapshot, dumps
from ..world import World
from .meadow import Meadow
from .schemas import Leaderboard

LEADERBOARD_FILE = "leaderboard.json"
RESEED, LEADERBOARD = "reseed-grass", "leaderboard"
DEMO_JOBS = (RESEED, LEADERBOARD)
"""The demo's jobs, in registration order (the API document names them as examples)."""

bp = Blueprint("meadow_leaderboard", __name__, url_prefix="/api/v1")


def register_demo_jobs(ext: WorldLoop, instance_path: str, config: Mapping[str, Any]) -> None:
    """Register the demo jobs on ``ext`` (before init_app, so replay finds them)."""
    path = Path(instance_path) / LEADERBOARD_FILE
    limit = int(config.get("MEADOW_LEADERBOARD_SIZE", 10))

    @ext.job(
        RESEED,
        kind="world",
        cron=str(config.get("MEADOW_RESEED_CRON", "0 4 * * *")),
        tz=str(config.get("MEADOW_RESEED_TZ", "UTC")),
        misfire="coalesce",
    )
    def reseed_grass(world: World, ctx: JobContext) -> dict[str, Any]:
        total = world.reseed_grass()  # type: ignore[attr-defined]
        return {"grass_total": round(float(total), 3), "tick": ctx.tick}

    @ext.job(
        LEADERBOARD,
        kind="background",
        every=float(config.get("MEADOW_LEADERBOARD_EVERY", 60.0)),
        misfire="skip",
        timeout=30.0,
    )
    def leaderboard(snapshot: Snapshot, ctx: JobContext) -> dict[str, Any]:
        entries = Meadow.leaderboard(snapshot, limit)
        doc = {
            "world": snapshot.world,
            "tick": snapshot.tick,
            "sim_time": snapshot.sim_time,
            "slot": ctx.slot,
            "entries": entries,
        }
        write_atomically(path, dumps(doc))
        return {"entries": len(entries), "tick": snapshot.tick}


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@bp.get("/leaderboard")
@operation(
    "The best-fed creatures, as the leaderboard job last wrote them",
    tags=("world",),
    responses={200: Reply("The last leaderboard", Leaderboard)},
    errors=(
        (404, "No leaderboard yet: the job has not run"),
        (503, "The leaderboard file is unreadable"),
    ),
)
def get_leaderboard() -> Response:
    """The last leaderboard the background job wrote (404 until it has run once)."""
    path = Path(current_app.instance_path) / LEADERBOARD_FILE
    try:
        raw = path.read_bytes()
        json.loads(raw)
    except FileNotFoundError:
        return api_error(404, "not_found", "no leaderboard yet: the job has not run")
    except ValueError:
        return api_error(503, "leaderboard_unreadable", "the leaderboard file is not valid JSON")
    return Response(raw, mimetype="application/json")
