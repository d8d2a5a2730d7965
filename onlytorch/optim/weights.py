"""Loss weights over time: a backward's ``weight`` is a number or a schedule of the iteration.

A weight schedule uses the learning-rate schedules' own closed forms (one definition of each: a
cosine here is ``CosineAnnealingLR.lr_at``), with the weight in the place of the learning rate:

- ``{type: linear, start: 0.0, end: 1.0, steps: 2000, begin: 0}`` (weights only) gives the value
  directly: ``start`` until iteration ``begin``, then a straight line to ``end`` over ``steps``
  iterations, then ``end``;
- every learning-rate schedule whose value is a closed form of the step (``step_lr``,
  ``exponential_lr``, ``cosine_annealing_lr``, ``linear_lr``, ``warmup_cosine``, and any schedule
  registered with ``optim.register``) takes its own hyper-parameters plus ``value`` (default 1.0),
  the weight it scales as it scales the base learning rate: ``{type: step_lr, value: 2.0,
  step_size: 100, gamma: 0.5}`` is 2.0 for iterations 0..99, 1.0 for 100..199, ...

The schedule is evaluated at the iteration, the trainer's ``step`` before the iteration runs (0 for
the first one, as a phase's ``start`` counts): every repetition and micro-batch of that iteration
uses the same weight. Nothing is stored in checkpoints: the weight is a function of the step,
so a resumed run continues with exactly the weights the uninterrupted one uses."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import GraphError
from . import hyper as H
from .hyper import Hyper
from .schedules import Schedule

VALUE = "value"  # the key of an lr-style weight schedule's base value (its base_lr)


class LinearRamp(Schedule):
    """A linear ramp from ``start`` to ``end`` over ``steps`` iterations from iteration ``begin``
    (a weight schedule: KL annealing). The value is ``start`` before ``begin`` and ``end`` after
    ``begin + steps``."""

    start: float
    end: float
    steps: int
    begin: int

    name = "linear"
    hypers: ClassVar[tuple[Hyper, ...]] = (
        Hyper("steps", H.REQUIRED, "iterations the ramp lasts", H.Count(1)),
        Hyper("start", 0.0, "the weight until iteration begin", H.Finite()),
        Hyper("end", 1.0, "the weight from iteration begin + steps on", H.Finite()),
        Hyper("begin", 0, "the iteration the ramp starts from", H.Count(0)),
    )

    def lr_at(self, t: int) -> float:
        done = min(max(t - self.begin, 0), self.steps)
        return self.start + (self.end - self.start) * done / self.steps


def _closed_form(cls: type[Schedule]) -> bool:
    """Whether a schedule's value is a function of the step alone (``Schedule.closed_form``): one
    that follows the monitored values (reduce_on_plateau) does not follow the iteration and is no
    weight schedule."""
    return bool(getattr(cls, "closed_form", True)) and cls.lr_at is not Schedule.lr_at


def weight_schedules() -> dict[str, type[Schedule]]:
    """The schedules a loss weight may follow, by the name a spec gives as ``type``: ``linear``,
    then the closed-form learning-rate schedules of ``optim.SCHEDULES`` (followed as it changes)."""
    from . import SCHEDULES

    out: dict[str, type[Schedule]] = {LinearRamp.name: LinearRamp}
    for name, cls in SCHEDULES.items():
        if name not in out and _closed_form(cls):
            out[name] = cls
    return out


def takes_value(cls: type[Schedule]) -> bool:
    """Whether the weight schedule scales a base ``value`` (the lr-style ones) rather than giving
    the weight directly (``linear``)."""
    return cls is not LinearRamp


class WeightSchedule:
    """A loss weight as a function of the iteration: ``at(t)``. Built from a schedule's type and
    its keys (``value`` and the schedule's hyper-parameters), checked as the schedule checks them
    (GraphError naming the key at fault)."""

    def __init__(self, kind: str, values: Mapping[str, Any]) -> None:
        known = weight_schedules()
        if kind not in known:
            raise GraphError(f"unknown weight schedule {kind!r}; use one of: {', '.join(known)}")
        cls = known[kind]
        given = dict(values)
        base = given.pop(VALUE, 1.0) if takes_value(cls) else 1.0
        if not H.is_number(base) or not math.isfinite(base):
            raise GraphError(f"{cls.__name__}: invalid {VALUE}={base!r} (must be a finite number)")
        checked = cls.check_hyper(given)
        # lr_at reads only the hyper-parameters and base_lr (see Schedule.check_for): a bare
        # instance evaluates it without an optimizer.
        probe = cls.__new__(cls)
        probe._set_hyper(checked)
        probe.base_lr = float(base)
        self.kind = kind
        self.value = float(base)
        self.hyper = checked
        self._probe = probe

    def at(self, t: int) -> float:
        """The weight at iteration t (the trainer's step before the iteration runs)."""
        try:
            return float(self._probe.lr_at(t))
        except OverflowError:  # gamma ** t past the floats: the trainer stops the run as diverged
            return math.copysign(math.inf, self.value)

    def describe(self) -> str:
        """In words, for the compile report: 'linear 0->1 over 2000 steps', 'cosine_annealing_lr
        of 2 (T_max=100, eta_min=0)'."""
        h = self.hyper
        if isinstance(self._probe, LinearRamp):
            begin = f" from step {h['begin']}" if h["begin"] else ""
            return f"linear {h['start']:g}->{h['end']:g} over {h['steps']} steps{begin}"
        shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in h.items())
        return f"{self.kind} of {self.value:g} ({shown})"

    def __repr__(self) -> str:
        return f"WeightSchedule({self.describe()})"


def weight_at(weight: float | WeightSchedule, t: int) -> float:
    """A backward's weight (a number or a schedule) at iteration t."""
    return weight.at(t) if isinstance(weight, WeightSchedule) else float(weight)
