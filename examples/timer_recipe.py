"""The recipe everyone finds first (kept to show what docs/migrate-from-timer.md replaces):
a re-armed threading.Timer, a module-global dict, one global Lock, atexit.

    gunicorn -w 1 --threads 4 -b 127.0.0.1:8000 examples.timer_recipe:app

Its faults: each tick is late by the previous one's cost (drift), a new thread per tick, an
exception in tick() ends the chain silently, handlers wait on the lock for a whole tick,
`-w 4` runs four worlds that disagree, and a restart loses everything.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from flask import Flask, jsonify, request

PERIOD = 0.05

world: dict[str, Any] = {"tick": 0, "robots": {}}  # the world: a global dict
lock = threading.Lock()  # shared by the timer and every request handler
timer: threading.Timer | None = None


def tick() -> None:
    global timer
    with lock:
        world["tick"] += 1
        for robot in world["robots"].values():
            robot["x"] += robot["vx"] * PERIOD
            robot["y"] += robot["vy"] * PERIOD
    timer = threading.Timer(PERIOD, tick)  # re-armed: drifts by this tick's own cost
    timer.daemon = True
    timer.start()


app = Flask(__name__)


@app.post("/robots/<name>")
def steer(name: str) -> Any:
    body = request.get_json(force=True)
    with lock:
        robot = world["robots"].setdefault(name, {"x": 0.0, "y": 0.0, "vx": 0.0, "vy": 0.0})
        robot["vx"], robot["vy"] = float(body["vx"]), float(body["vy"])
        return jsonify(robot)


@app.get("/robots")
def robots() -> Any:
    with lock:
        return jsonify({"tick": world["tick"], "robots": world["robots"]})


tick()
atexit.register(lambda: timer and timer.cancel())
