"""The meadow's per-entity arithmetic, in interchangeable implementations that agree bit for bit.

``Meadow``'s systems hand the arithmetic (and wander's random kicks, drawn from the world's
generator in the same order either way) to a :class:`Kernels`: ``numpy`` (vectorized NumPy,
the reference, always there) or ``numba`` (compiled loops over both cores, from the ``fast``
extra). Both compute
every value with the same operations in the same order and precision (no fast-math, no
floating-point reductions, no fused multiply-add), so the state hash does not depend on
which one ran: a store written with one replays with the other.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from .spatial import GridSort, grid_by_argsort

F64 = NDArray[np.float64]
F32 = NDArray[np.float32]

KERNELS = ("numpy", "numba")
"""Implementation names; ``auto`` picks ``numba`` when it is installed, else ``numpy``."""


class Kernels(Protocol):
    """The hot loops of the meadow's systems.

    Arrays a snapshot may share (grass, positions, energy, ages: ``Meadow.view`` publishes them
    read-only) are never written in place: the kernel that changes one returns a new array,
    reading the old one once and writing the new one once, which costs no more than an
    in-place update and spares the snapshot a copy. Only ``vel`` (never published) and arrays a
    kernel is handed fresh are updated in place.
    """

    name: str

    def grow_grass(self, grass: F32, regrow: float, grass_max: float) -> F32:
        """A new ``min(grass + regrow, grass_max)`` in float32."""
        ...

    def wander(self, vel: F64, rng: np.random.Generator, kick_scale: float, vmax: float) -> None:
        """Add ``(kick - 0.5) * kick_scale`` (float32) to ``vel`` and cap its length at ``vmax``,
        ``kick`` being ``rng.random(vel.shape, dtype=np.float32)`` (drawn, or made from the
        same bits: :func:`raw_float32_pairs`)."""
        ...

    def wander_move(
        self,
        vel: F64,
        pos: F64,
        rng: np.random.Generator,
        kick: tuple[float, float],
        dt: float,
        size: tuple[float, float, int, int],
    ) -> tuple[F64, bool, NDArray[np.signedinteger[Any]]] | None:
        """:meth:`wander` (``kick`` = (kick_scale, vmax)), then :meth:`move` (``size`` =
        (width, height, cols, rows)) in one pass over the rows, for a tick where nothing else
        changes the velocities between them (no avatars); what :meth:`move` returns, or None
        (nothing done) when these kernels have no such pass or cannot make ``rng``'s draws."""
        ...

    def move(
        self, pos: F64, vel: F64, dt: float, width: float, height: float, cols: int, rows: int
    ) -> tuple[F64, bool, NDArray[np.signedinteger[Any]]]:
        """New ``pos + vel * dt`` wrapped once each way, whether some row is still outside, and
        the new positions' :meth:`cells` on a ``cols`` x ``rows`` grid (made while the
        positions are at hand: grazing needs them next)."""
        ...

    def graze(
        self,
        cells: NDArray[np.signedinteger[Any]],
        sheep: NDArray[np.bool_] | None,
        grass: F32,
        energy: F64,
        bite: float,
        food_energy: float,
    ) -> F64:
        """Sheep (all rows, or where ``sheep``) eat from their ``cells`` of the flat ``grass``
        (in place): each cell is shared in proportion when it holds less than the bites asked
        of it. Returns the new energy (``energy`` + what each row ate)."""
        ...

    grows_while_grazing: bool
    """Whether :meth:`grow_graze` grows and grazes the grass in one pass (else it is None)."""

    def grow_graze(
        self,
        cells: NDArray[np.signedinteger[Any]],
        sheep: NDArray[np.bool_] | None,
        grass: F32,
        energy: F64,
        food: tuple[float, float],
        growth: tuple[float, float],
    ) -> tuple[F64, F32] | None:
        """:meth:`grow_grass` (``growth`` = (regrow, grass_max)) then :meth:`graze` (``food`` =
        (bite, food_energy)) in one pass over the cells, ``grass`` left as it is: the new
        energy and the new grass (a new array of ``grass``'s shape, not a view of one), or
        None (nothing done) without such a pass."""
        ...

    def cells(
        self, pos: F64, cols: int, rows: int, width: float, height: float
    ) -> NDArray[np.signedinteger[Any]]:
        """Row-major cell index of each position on a ``cols`` x ``rows`` grid (clipped)."""
        ...

    def life(
        self,
        kind: NDArray[np.int8],
        age: NDArray[np.int32],
        energy: F64,
        metabolism: float,
        max_age: int,
        breed_energy: float,
    ) -> tuple[NDArray[np.int32], NDArray[np.bool_], int, int, NDArray[np.intp]]:
        """Burn the sheep's energy (in place) and age everyone; return (the new ages, dead,
        sheep count, dead count, rows of the living sheep with energy to breed)."""
        ...

    def rebuild(
        self, dead: NDArray[np.bool_] | None, arrays: list[Any], tails: list[Any] | None
    ) -> list[Any]:
        """New arrays: the rows of each array but the ``dead`` ones (order kept; all of them
        when ``dead`` is None), followed by the rows of its tail (``tails[i]`` for
        ``arrays[i]``; none when ``tails`` is None). A tick's deaths and births in one pass
        over the rows, not one to drop the dead and another to append the newborn."""
        ...

    def grid(
        self, pos: F64, width: float, height: float, cols: int, rows: int
    ) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
        """The spatial grid's arrays (a :data:`~.spatial.GridSort`): rows sorted stably by
        :func:`~.spatial.bucket_of`, and each bucket's start (``cols * rows + 1`` values)."""
        ...


class NumpyKernels:
    """The reference implementation: NumPy array expressions, one thread."""

    name = "numpy"

    def grow_grass(self, grass: F32, regrow: float, grass_max: float) -> F32:
        out = grass + np.float32(regrow)
        np.minimum(out, np.float32(grass_max), out=out)
        return out

    def wander(self, vel: F64, rng: np.random.Generator, kick_scale: float, vmax: float) -> None:
        kick = rng.random(vel.shape, dtype=np.float32)
        kick -= np.float32(0.5)
        kick *= np.float32(kick_scale)
        vel += kick
        speed2 = np.einsum("ij,ij->i", vel, vel)
        np.maximum(speed2, vmax * vmax, out=speed2)
        scale = np.sqrt(speed2, out=speed2)
        np.divide(vmax, scale, out=scale)
        vel *= scale[:, None]

    def wander_move(
        self,
        vel: F64,
        pos: F64,
        rng: np.random.Generator,
        kick: tuple[float, float],
        dt: float,
        size: tuple[float, float, int, int],
    ) -> tuple[F64, bool, NDArray[np.signedinteger[Any]]] | None:
        return None  # the reference runs the two systems as they are written

    def move(
        self, pos: F64, vel: F64, dt: float, width: float, height: float, cols: int, rows: int
    ) -> tuple[F64, bool, NDArray[np.signedinteger[Any]]]:
        out = vel * dt
        out += pos  # IEEE addition commutes: the bits of pos + vel * dt
        outside = False
        for axis, size in ((0, width), (1, height)):
            col = out[:, axis]
            np.add(col, size, out=col, where=col < 0.0)
            np.subtract(col, size, out=col, where=col >= size)
            outside = outside or bool(col.size and (col.min() < 0.0 or col.max() >= size))
        return out, outside, self.cells(out, cols, rows, width, height)

    grows_while_grazing = False  # the reference runs the two systems as they are written

    def grow_graze(
        self,
        cells: NDArray[np.signedinteger[Any]],
        sheep: NDArray[np.bool_] | None,
        grass: F32,
        energy: F64,
        food: tuple[float, float],
        growth: tuple[float, float],
    ) -> tuple[F64, F32] | None:
        return None

    def cells(
        self, pos: F64, cols: int, rows: int, width: float, height: float
    ) -> NDArray[np.signedinteger[Any]]:
        cx = (pos[:, 0] * (cols / width)).astype(np.intp)
        cy = (pos[:, 1] * (rows / height)).astype(np.intp)
        np.clip(cx, 0, cols - 1, out=cx)
        np.clip(cy, 0, rows - 1, out=cy)
        cy *= cols
        cy += cx
        return cy

    def graze(
        self,
        cells: NDArray[np.signedinteger[Any]],
        sheep: NDArray[np.bool_] | None,
        grass: F32,
        energy: F64,
        bite: float,
        food_energy: float,
    ) -> F64:
        sheep_cells = cells if sheep is None else cells[sheep]
        demand = np.bincount(sheep_cells, minlength=grass.size).astype(np.float32)
        demand *= np.float32(bite)
        # Whole-grid array operations (no gather of the occupied cells, dearer per element):
        # a cell nobody grazes has demand 0, so its share (1, or 0 on bare ground) is never
        # read and it loses min(0 * share, grass) = 0, its grass unchanged to the bit.
        share = np.maximum(demand, np.float32(1e-12))
        np.divide(grass, share, out=share)
        np.minimum(share, np.float32(1.0), out=share)
        eaten: F64 = share[cells].astype(np.float64)
        eaten *= bite * food_energy
        if sheep is not None:
            eaten[~sheep] = 0.0
        eaten += energy  # IEEE addition commutes: the bits of energy + eaten
        demand *= share
        np.minimum(demand, grass, out=demand)
        grass -= demand
        return eaten

    def life(
        self,
        kind: NDArray[np.int8],
        age: NDArray[np.int32],
        energy: F64,
        metabolism: float,
        max_age: int,
        breed_energy: float,
    ) -> tuple[NDArray[np.int32], NDArray[np.bool_], int, int, NDArray[np.intp]]:
        sheep = kind == 0
        age = age + np.int32(1)
        energy -= np.where(sheep, metabolism, 0.0)
        dead = sheep & ((energy <= 0.0) | (age > max_age))
        parents = np.flatnonzero(sheep & ~dead & (energy >= breed_energy))
        return age, dead, int(np.count_nonzero(sheep)), int(np.count_nonzero(dead)), parents

    def rebuild(
        self, dead: NDArray[np.bool_] | None, arrays: list[Any], tails: list[Any] | None
    ) -> list[Any]:
        kept = arrays if dead is None else [a[~dead] for a in arrays]
        if tails is None:
            return kept
        return [np.concatenate([a, t]) for a, t in zip(kept, tails, strict=True)]

    def grid(
        self, pos: F64, width: float, height: float, cols: int, rows: int
    ) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
        return grid_by_argsort(pos, width, height, cols, rows)


def raw_float32_pairs(rng: np.random.Generator, n: int) -> NDArray[np.uint64] | None:
    """The ``n`` raw 64-bit draws that ``rng.random((n, 2), dtype=np.float32)`` would make of
    ``rng``'s PCG64, drawn, leaving the generator in the same state; None (nothing drawn) for
    another bit generator or one holding half a draw.

    PCG64 serves 32-bit draws low half first, then high half, and a float32 is
    ``(u32 >> 8) * 2**-24``: a compiled loop can make the floats from these draws bit for bit,
    at about half the cost of NumPy drawing them (``random_raw`` skips the per-number calls).
    The generator's state keeps the last high half it served, which is set here too, so the
    state, and the state hash, are the same either way.
    """
    bitgen = rng.bit_generator
    state = dict(bitgen.state)
    if state["bit_generator"] != "PCG64" or state["has_uint32"]:
        return None
    raw: NDArray[np.uint64] = bitgen.random_raw(n)
    if n:
        state = dict(bitgen.state)
        state["uinteger"] = int(raw[-1] >> np.uint64(32))
        bitgen.state = state
    return raw


_U64 = (1 << 64) - 1


def pcg64_streams(rng: np.random.Generator, n: int, chunks: int) -> PcgStreams | None:
    """Where each of ``chunks`` ranges of ``n`` rows starts in ``rng``'s PCG64 stream, to
    make the ``n`` draws of :func:`raw_float32_pairs` in parallel (range ``t`` covers rows
    ``t * n // chunks`` up to the next range's first, one draw per row); None for another bit
    generator or one holding half a draw (nothing is drawn either way).

    Each range's state is the generator's, advanced (``PCG64.advance``, a jump in O(log n))
    to the range's first draw: every range makes exactly the draws one thread would.
    """
    bitgen = rng.bit_generator
    if not isinstance(bitgen, np.random.PCG64) or bitgen.state["has_uint32"]:
        return None
    starts = np.empty((chunks, 2), dtype=np.uint64)
    for t in range(chunks):
        jumper = copy.deepcopy(bitgen)
        jumper.advance(t * n // chunks)
        at = int(jumper.state["state"]["state"])
        starts[t] = (at >> 64, at & _U64)
    inc = int(bitgen.state["state"]["inc"])
    return PcgStreams(starts, np.uint64(inc >> 64), np.uint64(inc & _U64))


def pcg64_drawn(rng: np.random.Generator, n: int, last: int) -> None:
    """Leave ``rng`` as :func:`raw_float32_pairs` would after ``n`` draws, the last being
    ``last``: advanced ``n`` steps, keeping ``last``'s high half for a 32-bit draw."""
    bitgen = rng.bit_generator
    if n and isinstance(bitgen, np.random.PCG64):
        bitgen.advance(n)
        state = bitgen.state  # a new dict at each read
        state["uinteger"] = int(last) >> 32
        bitgen.state = state


@dataclass(frozen=True, slots=True)
class PcgStreams:
    """The start of each range's draws from a PCG64 (:func:`pcg64_streams`)."""

    starts: NDArray[np.uint64]
    """One row per range: the 128-bit state before its first draw, as (high, low) halves."""
    inc_hi: np.uint64
    inc_lo: np.uint64
    """The generator's increment (its stream), the same for every range."""


log = logging.getLogger("worldloop.demo")

_loaded: dict[str, Kernels] = {"numpy": NumpyKernels()}


def reader_grid_sort() -> GridSort:
    """How a reader thread builds a snapshot's spatial grid: with the numba kernels' one-thread
    build when this process has them loaded (it never starts loading them), else NumPy; never
    the parallel build, whose threads are the loop's. The same arrays either way."""
    one_thread: GridSort | None = getattr(_loaded.get("numba"), "grid_one_thread", None)
    return one_thread or grid_by_argsort


def numba_available() -> bool:
    """Whether the compiled kernels can be used (numba is installed)."""
    return importlib.util.find_spec("numba") is not None


def get_kernels(name: str = "numpy") -> Kernels:
    """The kernels called ``name`` (``numpy``, ``numba`` or ``auto``); ValueError if unknown,
    ImportError if ``numba`` is asked for and not installed (``pip install worldloop[fast]``)."""
    if name == "auto":
        name = "numba" if numba_available() else "numpy"
    if name not in KERNELS:
        raise ValueError(f"unknown kernels {name!r}; choose one of {', '.join(KERNELS)} or auto")
    if name not in _loaded:
        from .kernels_numba import NumbaKernels

        _loaded[name] = NumbaKernels()
    return _loaded[name]


class NumpyUntilLoaded(NumpyKernels):
    """The NumPy kernels, holding the start of the compiled ones' loading (:func:`load_later`).

    Only a process that runs the world should pay for loading numba, and not while it replays
    its journal (a CPU-second taken from the recovery beside it): the meadow starts the load
    when it publishes its first snapshot (``Meadow.view``), which happens after the recovery,
    in the process that ticks; a web worker, which builds the world only to validate commands,
    never does.
    """

    def __init__(self, start: Callable[[], None]) -> None:
        self._start: Callable[[], None] | None = start
        self._lock = threading.Lock()

    def load_now(self) -> None:
        """Start loading the compiled kernels (once; later calls do nothing)."""
        if self._start is not None:
            with self._lock:
                start, self._start = self._start, None
            if start is not None:
                start()


def load_later(kernels: Kernels) -> None:
    """Start loading the kernels ``kernels`` stands in for, if it stands in for any."""
    if isinstance(kernels, NumpyUntilLoaded):
        kernels.load_now()


def kernels_later(name: str, install: Callable[[Kernels], None]) -> Kernels:
    """The NumPy kernels now, and ``install(kernels)`` from a background thread once the
    kernels called ``name`` are loaded and warmed up (nothing more if ``name`` means numpy).
    The loading starts when :func:`load_later` is called on the kernels returned.

    Loading numba and its compiled code takes seconds; a server need not wait for it, since
    every implementation gives the same bits: the world starts (and replays its journal) on
    NumPy and switches between two systems when the compiled kernels are ready.
    """
    resolved = ("numba" if numba_available() else "numpy") if name == "auto" else name
    if resolved not in KERNELS:
        raise ValueError(f"unknown kernels {name!r}; choose one of {', '.join(KERNELS)} or auto")
    if resolved == "numpy":
        return get_kernels("numpy")
    if not numba_available():
        raise ImportError('the numba kernels need numba: pip install "worldloop[fast]"')

    def load() -> None:
        started = time.perf_counter()
        try:
            kernels = get_kernels(resolved)
            warm = getattr(kernels, "warm_up", None)
            if warm is not None:
                warm()
        except Exception:
            log.exception("the %s kernels could not be loaded; the world stays on NumPy", name)
            return
        install(kernels)
        log.info(
            "the %s kernels are in use (loaded in %.1f s)", resolved, time.perf_counter() - started
        )

    return NumpyUntilLoaded(
        threading.Thread(target=load, name="worldloop-kernels", daemon=True).start
    )
