"""When each phase of the training schedule runs, and which batch it sees: the one definition the
trainer, the compile report, the drawing and the checks read.

Iterations count from 0: iteration ``i`` is the one that runs while the trainer's step is ``i``
(before it becomes ``i + 1``). A phase runs at ``i`` when ``start <= i``, ``i < until`` (when
given) and ``(i - start) % every == 0`` (when given).

Batches: ``batch: new`` draws the next batch, ``batch: same`` reuses the batch the previous phase
that ran in this iteration saw; when no phase has drawn yet in this iteration (the phases before it
are inactive), ``same`` draws. The default is ``new`` for the schedule's first phase and ``same``
for the others. Each further run of a phase (``repeat``, ``epochs``) and each further micro-batch of
``accumulate`` draws the next batch. An iteration in which no phase runs draws nothing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .spec.schema import PhaseSpec as Timed  # what the rules read: start, until, every, accumulate, batch

# how many iterations of one stretch are looked at to find the combinations of ``every`` phases
# that run together (the pattern repeats with the least common multiple of their periods)
PATTERN_CAP = 4096


def active(spec: Timed, i: int) -> bool:
    """Whether the phase runs at iteration ``i``."""
    if i < spec.start or (spec.until is not None and i >= spec.until):
        return False
    return spec.every is None or (i - spec.start) % spec.every == 0


def timed(spec: Timed) -> bool:
    """Whether the phase has a range (it does not simply run at every iteration)."""
    return spec.start != 0 or spec.until is not None or spec.every is not None


def first_run(spec: Timed, total: int | None = None) -> int | None:
    """The first iteration the phase runs at, or None when it never runs (before ``total``)."""
    end = min(x for x in (spec.until, total) if x is not None) if (spec.until, total) != (None, None) else None
    return spec.start if end is None or spec.start < end else None


def last_run(spec: Timed, total: int | None) -> int | None:
    """The last iteration the phase runs at (before ``total``); None when it never runs, or runs on
    without end (no until and no total)."""
    ends = [x for x in (spec.until, total) if x is not None]
    if not ends or first_run(spec, total) is None:
        return None
    last = min(ends) - 1
    if spec.every is not None:
        last -= (last - spec.start) % spec.every
    return last


def batch_mode(spec: Timed, index: int) -> str:
    """The phase's ``batch``: given, or ``new`` for the schedule's first phase and ``same`` after."""
    return spec.batch or ("new" if index == 0 else "same")


def describe(spec: Timed) -> str | None:
    """The active range in words ("iterations 0-999", "from 1000", "every 5 from 0"); None for a
    phase that runs at every iteration."""
    if not timed(spec):
        return None
    if spec.until is not None:
        span = f"iterations {spec.start}-{spec.until - 1}" if spec.until - 1 > spec.start else f"iteration {spec.start}"
        return f"every {spec.every} in {span}" if spec.every is not None else span
    if spec.every is not None:
        return f"every {spec.every} from {spec.start}"
    return f"from {spec.start}"


def notes(spec: Timed, index: int) -> list[str]:
    """The compile report's and the drawing's words for a phase's range, accumulate and batch,
    each only when not the default."""
    out = []
    rng = describe(spec)
    if rng is not None:
        out.append(rng)
    if spec.accumulate > 1:
        out.append(f"accumulate {spec.accumulate}")
    if spec.batch is not None and spec.batch != ("new" if index == 0 else "same"):
        out.append(f"batch {spec.batch}")
    return out


@dataclass(frozen=True)
class Stretch:
    """Iterations ``first`` to ``end - 1`` (``end`` None: on without end), over which no phase starts
    or stops; ``present``: the phases that run at least once in it."""

    first: int
    end: int | None
    present: frozenset[int]

    def words(self) -> str:
        if self.end is None:
            return f"from {self.first}"
        return f"iterations {self.first}-{self.end - 1}" if self.end - 1 > self.first else f"iteration {self.first}"


def _runs_in(spec: Timed, first: int, end: int | None) -> bool:
    lo = max(first, spec.start)
    hi = min(x for x in (end, spec.until) if x is not None) if (end, spec.until) != (None, None) else None
    if hi is not None and lo >= hi:
        return False
    if spec.every is None:
        return True
    i = lo + (-(lo - spec.start)) % spec.every
    return hi is None or i < hi


def stretches(schedule: Sequence[Timed], total: int | None) -> list[Stretch]:
    """The run cut where any phase starts or stops (before ``total`` iterations, when known)."""
    cuts = {0} | {p.start for p in schedule} | {p.until for p in schedule if p.until is not None}
    if total is not None:
        cuts = {c for c in cuts if c < total}
    edges = sorted(cuts)
    out = []
    for j, first in enumerate(edges):
        end = edges[j + 1] if j + 1 < len(edges) else total
        out.append(Stretch(first, end, frozenset(i for i, p in enumerate(schedule) if _runs_in(p, first, end))))
    return out


def together(schedule: Sequence[Timed], total: int | None) -> list[tuple[int, ...]]:
    """Every combination of phases (indices, in schedule order) that runs in one iteration, in the
    order each first occurs; an iteration where none runs is left out."""
    seen: dict[tuple[int, ...], None] = {}
    for s in stretches(schedule, total):
        periods = [schedule[i].every for i in s.present if schedule[i].every is not None]
        span = math.lcm(*periods) if periods else 1  # type: ignore[arg-type]
        end = s.first + min(span, PATTERN_CAP)
        if s.end is not None:
            end = min(end, s.end)
        for it in range(s.first, end):
            combo = tuple(i for i in sorted(s.present) if active(schedule[i], it))
            if combo:
                seen.setdefault(combo, None)
    return list(seen)


def overlap(a: Timed, b: Timed, total: int | None) -> bool:
    """Whether the two phases ever run in the same iteration."""
    return any({0, 1} <= set(c) for c in together([a, b], total))
