"""The World base: state, ordered systems, command application, and a state hash.

A concrete world keeps all of its state in plain values and NumPy arrays (random generator
included), so that ``step(state, commands)`` is deterministic and the state can be saved,
restored and hashed. Only the loop thread ever calls ``step``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ValidationError

from .commands import Command, Outcome
from .errors import CommandInvalid, CommandRejected, WorldLoopError
from .models import error_details, error_message
from .outbox import TASK_RESULT, Outbox, TaskRequest, TaskResult

if TYPE_CHECKING:
    from .frame import Scene
    from .snapshot import Snapshot

log = logging.getLogger("worldloop.world")

DEFAULT_DT = 0.05
"""dt of a world no runtime has set (1 / the default 20 Hz), and of states saved without one."""

TaskResultHandler = Callable[[TaskRequest, str, Any, "str | None"], Any]
"""``(request, status, result, error)``: what ``World.on_task_result`` is called with."""

StateValue = np.ndarray | int | float | str | bool | None
State = dict[str, StateValue]


@dataclass(frozen=True, slots=True)
class System:
    """One named step of the simulation, run every tick in declared order."""

    name: str
    run: Callable[[], None]


class World(ABC):
    """Base class for a world. Subclasses define commands, systems, state and a view.

    Commands are declared with a pydantic model per type; the default :meth:`validate` checks a
    payload against it, so a world needs no validation code, and the API documents them::

        class Add(BaseModel):
            by: int

        class Counter(World):
            commands = {"add": Add}
    """

    name: ClassVar[str] = "world"
    fixed_dt: ClassVar[float | None] = None
    """Simulation seconds per tick when the world fixes its own step; None (the default): the
    runtime sets ``dt = 1 / rate`` when it takes the world, so at its configured rate
    simulation time keeps pace with wall time. Either way ``dt`` is part of the state: a rate
    change at run time (or a restart at another rate) changes the wall speed, never ``dt``."""
    commands: ClassVar[Mapping[str, type[BaseModel]]] = {}
    """Command types clients may send, each with the pydantic model of its payload."""
    internal_commands: ClassVar[Mapping[str, type[BaseModel]]] = {}
    """Command types only server code submits (no actor), e.g. a join carrying a token hash."""
    view_models: ClassVar[Mapping[str, type[BaseModel]]] = {}
    """Models of what this world publishes, by the name of the API schema whose fields each one
    adds to (``WorldSummary``, ``Entity``, ``Frame``): documentation only, never validated."""

    def __init__(self) -> None:
        self.tick = 0
        self.dt: float = self.fixed_dt if self.fixed_dt is not None else DEFAULT_DT
        """Simulation seconds per tick: simulation time is ``tick * dt``, never wall time."""
        self.system_errors: Counter[str] = Counter()
        self.logger = log
        self.command_handlers: dict[str, Callable[[Command], Any]] = {}
        """Handlers consulted before ``apply`` by command type (scheduled jobs register here)."""
        self.job_slots: dict[str, float] = {}
        """Last schedule slot run per job: world state, so replay and failover never rerun one."""
        self.outbox = Outbox()
        """Heavy work this world asked for and has not had back (see worldloop.outbox)."""
        self.command_handlers[TASK_RESULT] = self._task_result
        self.task_handlers: dict[str, TaskResultHandler] = {}
        """Handlers of task outcomes by task name, consulted before ``on_task_result`` (a
        scheduled job on Celery closes its slot here; see worldloop.jobs.offloaded)."""

    # -- to be defined by a world ---------------------------------------------------------

    def validate(self, type_: str, payload: Mapping[str, Any], actor: str | None) -> dict[str, Any]:
        """Check a command's shape in the request thread; return the normalized payload.

        Must not read live state (that belongs to the loop thread); raise CommandInvalid. The
        default validates with the declared model and returns its JSON form (what the journal
        keeps, so a replay sees exactly what the live world saw); ``internal_commands`` are
        accepted only without an actor.
        """
        model = self.command_model(type_, actor)
        try:
            parsed = model.model_validate(payload)
        except ValidationError as exc:
            raise CommandInvalid(
                f"{type_}: {error_message(exc)}", details=error_details(exc)
            ) from None
        return parsed.model_dump(mode="json")

    def command_model(self, type_: str, actor: str | None) -> type[BaseModel]:
        """The declared model of ``type_``; CommandInvalid when ``actor`` may not send it."""
        model = self.commands.get(type_)
        if model is None and actor is None:
            model = self.internal_commands.get(type_)
        if model is None:
            allowed = [*self.commands, *(self.internal_commands if actor is None else ())]
            raise CommandInvalid(
                f"unknown command type {type_!r}", details={"field": "type", "allowed": allowed}
            )
        return model

    @abstractmethod
    def apply(self, command: Command) -> Any:
        """Apply one command to return a JSON-able result or raise CommandRejected."""

    @abstractmethod
    def systems(self) -> Sequence[System]:
        """The systems to run each tick, in order."""

    @abstractmethod
    def get_state(self) -> State:
        """Everything needed to reproduce the world exactly (arrays are not copied)."""

    @abstractmethod
    def set_state(self, state: Mapping[str, Any]) -> None:
        """Replace the live state with ``state`` (as returned by get_state)."""

    @abstractmethod
    def view(self) -> dict[str, Any]:
        """The data published in a snapshot. Arrays are copied and frozen by the runtime."""

    def summary(self) -> dict[str, Any]:
        """A small JSON-able summary for GET /world."""
        return {}

    def view_region(
        self, snapshot: Snapshot, bbox: tuple[float, float, float, float] | None, limit: int
    ) -> dict[str, Any]:
        """A viewport-limited JSON-able frame of a published snapshot, for streams and viewers.

        Runs on reader threads: it must read only ``snapshot``, never the live world. The
        default is the tick, simulation time and summary plus the JSON encoding of
        :meth:`scene` (what a world overrides to be drawn).
        """
        from .frame import scene_json

        return {
            "tick": snapshot.tick,
            "sim_time": snapshot.sim_time,
            "summary": dict(snapshot.summary),
            **scene_json(self.scene(snapshot, bbox, limit)),
        }

    def scene(
        self, snapshot: Snapshot, bbox: tuple[float, float, float, float] | None, limit: int
    ) -> Scene | None:
        """What the viewer draws for ``snapshot`` (see worldloop.frame): bounds, layers of
        entities (at most ``limit`` each, inside ``bbox``), a grid, the panel. None (the
        default) draws no map; the viewer still shows the tick, rate and timings.

        Runs on reader threads: read only ``snapshot``, never the live world.
        """
        return None

    def on_task_result(
        self, request: TaskRequest, status: str, result: Any, error: str | None
    ) -> Any:
        """Apply the outcome of ``request`` (status: succeeded, failed or timed_out).

        Called on the loop thread, once per request, inside the journaled ``task:result``
        command (so replay calls it with the same result). Worlds that request tasks override it.
        """
        return None

    # -- provided ---------------------------------------------------------------------------

    def request_task(
        self,
        task: str,
        params: Mapping[str, Any],
        *,
        key: str | None = None,
        snapshot: bool = False,
    ) -> str:
        """Ask for heavy work off the tick (loop thread: a command, system or world job).

        ``params`` must be JSON and hold a copy of what the task needs (``snapshot=True`` adds
        the latest published snapshot when it is sent). Returns the request's deterministic id
        (named by ``key`` when given, else numbered); the task is sent once this tick is durable
        (worldloop.offload).
        """
        return self.outbox.request(
            self.name, task, dict(params), self.tick, key=key, snapshot=snapshot
        )

    def _task_result(self, cmd: Command) -> Any:
        """The ``task:result`` command: applied only while its request is pending."""
        res = TaskResult.model_validate(cmd.payload)
        request = self.outbox.settle(res.task_id)
        if request is None:
            return {"task_id": res.task_id, "applied": False}
        handler = self.task_handlers.get(request.task, self.on_task_result)
        applied = handler(request, res.status, res.result, res.error)
        return {"task_id": res.task_id, "applied": True, "status": res.status, "result": applied}

    @property
    def sim_time(self) -> float:
        return self.tick * self.dt

    def use_rate(self, rate_hz: float) -> None:
        """Called by the runtime that takes a new world: ``dt = 1 / rate_hz`` unless the world
        fixes its own (``fixed_dt``). A restored state's ``dt`` replaces it afterwards."""
        if self.fixed_dt is None and rate_hz > 0:
            self.dt = 1.0 / float(rate_hz)

    def step(self, commands: Sequence[Command]) -> list[Outcome]:
        """Advance one tick: apply commands in order, run the systems, count the tick."""
        outcomes = [self._apply_contained(cmd) for cmd in commands]
        for system in self.systems():
            try:
                system.run()
            except Exception:
                self.system_errors[system.name] += 1
                self.logger.exception(
                    "system %r failed at tick %d; the loop goes on", system.name, self.tick
                )
        self.tick += 1
        return outcomes

    def _apply_contained(self, cmd: Command) -> Outcome:
        try:
            handler = self.command_handlers.get(cmd.type)
            result = self.apply(cmd) if handler is None else handler(cmd)
        except (CommandRejected, CommandInvalid) as exc:
            return Outcome(cmd, False, None, exc.code, exc.message, exc.details)
        except WorldLoopError as exc:
            return Outcome(cmd, False, None, exc.code, exc.message, exc.details)
        except Exception as exc:
            self.logger.exception("command %s (%s) failed at tick %d", cmd.id, cmd.type, self.tick)
            return Outcome(
                cmd, False, None, "command_failed", f"command failed: {type(exc).__name__}", {}
            )
        return Outcome(cmd, True, result)

    def full_state(self) -> State:
        """get_state plus the tick counter and dt (and the last job slots, when any job ran)."""
        state = dict(self.get_state())
        state["__tick__"] = self.tick
        state["__dt__"] = self.dt
        if self.job_slots:
            state["__jobs__"] = json.dumps(self.job_slots, sort_keys=True)
        outbox = self.outbox.to_state()
        if outbox is not None:
            state["__outbox__"] = outbox
        return state

    def restore(self, state: Mapping[str, Any]) -> None:
        """Inverse of full_state."""
        rest = dict(state)
        self.tick = int(rest.pop("__tick__", 0))
        # States saved before dt was kept were all made at the one dt there was then.
        self.dt = float(rest.pop("__dt__", DEFAULT_DT))
        jobs = rest.pop("__jobs__", None)
        outbox = rest.pop("__outbox__", None)
        self.outbox.load(None if outbox is None else str(outbox))
        self.job_slots = (
            {str(k): float(v) for k, v in json.loads(str(jobs)).items()} if jobs else {}
        )
        self.set_state(rest)

    def state_hash(self) -> str:
        """SHA-256 over the full state in a canonical order: equal hashes mean equal worlds."""
        return hash_state(self.full_state())


def hash_state(state: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        h.update(key.encode())
        h.update(b"\0")
        if isinstance(value, np.ndarray):
            arr = np.ascontiguousarray(value)
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
        else:
            h.update(json.dumps(value, sort_keys=True).encode())
        h.update(b"\1")
    return h.hexdigest()


def rng_state(rng: np.random.Generator) -> str:
    """The generator's full state as a JSON string (part of the world state)."""
    return json.dumps(rng.bit_generator.state, sort_keys=True)


def rng_from_state(state: str) -> np.random.Generator:
    data = json.loads(state)
    bitgen = getattr(np.random, data["bit_generator"])()
    bitgen.state = data
    return np.random.Generator(bitgen)
