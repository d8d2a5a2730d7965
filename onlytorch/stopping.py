"""What the evaluations during training decide beyond best.npz: early stopping
(``train.early_stopping``) and the learning-rate schedules that follow the monitored value
(``reduce_on_plateau``). Both read the value of ``train.monitor`` (onlytorch/monitor.py, which
gives its direction) at each evaluation of ``train.eval_every``, in the order of the evaluations.

Early stopping has Keras's and Lightning's semantics (their EarlyStopping, with the arithmetic of
Lightning's): an evaluation **improves** when its value beats the reference by more than
``min_delta`` in the monitor's direction, ``value + min_delta < best`` (min) or ``value - min_delta
> best`` (max); the reference starts at the worst value (so the first finite evaluation improves)
and becomes the value of each improving evaluation; a NaN never improves. Each evaluation that does
not improve counts one; an improving one resets the count to 0; when the count reaches
``patience`` the run ends (status ``early_stopped``) after that evaluation, P evaluations after the
last improving one. best.npz is chosen as without early stopping (any better value, no min_delta),
so it is the improving evaluation or a later, slightly better one.

Both keep their state in the checkpoint (``stop/...`` entries, and the schedule's own under
``sched/<optimizer>/``), so an interrupted and resumed run stops, and lowers its learning rate, at
exactly the evaluation the uninterrupted run does. A run that stopped records it there too
(``stop/stopped``): a resume of it trains no further."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from . import checkpoint as ckpt
from . import monitor

if TYPE_CHECKING:
    from .optim import Schedule
    from .spec.schema import Spec

NOT_YET = -1  # best_step / stopped before any improving evaluation / while the run goes on


class EarlyStopping:
    """The early-stopping counter of one run (see the module's docstring). ``observe(step, value)``
    after each evaluation says whether the run ends now; ``stopped`` is the step it ended at.
    ``patience`` None: inactive (a spec without early stopping), it never stops and its
    checkpoint entries are none, so such a run's checkpoints are what they always were."""

    def __init__(self, patience: int | None, min_delta: float = 0.0, mode: str = "min", monitored: str = "") -> None:
        self.patience, self.min_delta, self.mode = patience, float(min_delta), mode
        self.monitored = monitored  # "metric@split:mode": a resume after the monitor changed starts afresh
        self.best = self._worst()
        self.best_step = NOT_YET
        self.wait = 0
        self.stopped = NOT_YET

    @classmethod
    def of(cls, spec: Spec) -> EarlyStopping:
        """The counter of a (valid) spec: inactive without ``train.early_stopping``."""
        es = spec.train.early_stopping if spec.train is not None else None
        m = monitor.resolve(spec)
        if es is None or m is None:
            return cls(None)
        return cls(es.patience, es.min_delta, m.mode, f"{m.metric}@{m.split}:{m.mode}")

    @property
    def active(self) -> bool:
        return self.patience is not None

    def _worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def improves(self, value: float) -> bool:
        if self.mode == "min":
            return value + self.min_delta < self.best
        return value - self.min_delta > self.best

    def observe(self, step: int, value: float) -> bool:
        """Count one evaluation of the monitored quantity; True when the run ends with it."""
        if self.patience is None:
            return False
        if self.improves(value):
            self.best, self.best_step, self.wait = float(value), step, 0
        else:
            self.wait += 1
        if self.wait >= self.patience:
            self.stopped = step
        return self.has_stopped

    @property
    def has_stopped(self) -> bool:
        return self.stopped != NOT_YET

    def describe(self) -> str:
        """Why the run ended, for run.json's message and the command's last line."""
        delta = f" by more than {self.min_delta:g}" if self.min_delta else ""
        best = (
            f"its best was {self.best:.6g} at step {self.best_step}"
            if self.best_step != NOT_YET
            else "no evaluation improved"
        )
        return (
            f"early stopped at step {self.stopped}: {self._label()} did not improve{delta} "
            f"for {self.patience} evaluation{'s' if self.patience != 1 else ''}; {best}"
        )

    def record(self) -> dict[str, Any]:
        """run.json's ``early_stopping`` of a run it ended: the step it stopped at and the last
        improving evaluation (best.npz's step is run.json's ``best``: the same, or a later evaluation
        better by less than min_delta)."""
        return {
            "stopped_step": self.stopped,
            "best_step": self.best_step if self.best_step != NOT_YET else None,
            "best_value": self.best if self.best_step != NOT_YET else None,
            "patience": self.patience,
            "min_delta": self.min_delta,
        }

    def _label(self) -> str:
        metric, _, rest = self.monitored.partition("@")
        split = rest.partition(":")[0]
        return f"{metric} ({split})" if split else metric or "the monitored quantity"

    # -------------------------------------------------------------- checkpoint entries

    def state(self) -> dict[str, np.ndarray]:
        if not self.active:
            return {}
        return {
            "stop/monitored": np.array(self.monitored),
            "stop/best": np.array(self.best, dtype=np.float64),
            "stop/best_step": np.array(self.best_step, dtype=np.int64),
            "stop/wait": np.array(self.wait, dtype=np.int64),
            "stop/stopped": np.array(self.stopped, dtype=np.int64),
        }

    def check_state(self, state: Mapping[str, np.ndarray]) -> set[str]:
        """Raise CheckpointError unless restore(state) would succeed; the entries it reads. A
        checkpoint without any (written before the spec had early stopping, resumed with --force)
        leaves the counter fresh."""
        keys = set(self.state())
        if not keys or not keys & set(state):
            return set()
        ckpt.text(state, "stop/monitored")
        best = ckpt.entry(state, "stop/best")
        if best.shape != () or best.dtype.kind != "f" or math.isnan(float(best)):
            raise ckpt.CheckpointError(f"entry 'stop/best' is {ckpt.describe(best)}, not a number")
        for key in ("stop/best_step", "stop/stopped"):
            ckpt.count(state, key, low=NOT_YET)
        ckpt.count(state, "stop/wait")
        return keys

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        if not self.active or "stop/monitored" not in state or str(state["stop/monitored"]) != self.monitored:
            return  # another quantity's counter (a resume with --force after the monitor changed)
        self.best = float(state["stop/best"])
        self.best_step = int(state["stop/best_step"])
        self.wait = int(state["stop/wait"])
        self.stopped = int(state["stop/stopped"])


def nothing_to_resume(path: Any, info: Mapping[str, Any]) -> tuple[int, str]:
    """The step and the one-line message of ``--resume`` on a run that early-stopped (from its run.json)."""
    record = info.get("early_stopping")
    steps = info.get("steps_done")
    stopped = record.get("stopped_step") if isinstance(record, dict) else None
    step = stopped if isinstance(stopped, int) else steps if isinstance(steps, int) else 0
    best = info.get("best")
    best_step = best.get("step") if isinstance(best, dict) else None
    where = f" (best.npz: step {best_step})" if isinstance(best_step, int) else ""
    return step, (
        f"{path}: the run is early_stopped at step {step}{where}; nothing to resume "
        "(to train further, start a new run with --out)"
    )


def value_schedules(schedules: Mapping[str, Schedule]) -> dict[str, Schedule]:
    """The schedules stepped on evaluations with the monitored value (not closed forms of the step)."""
    return {name: s for name, s in schedules.items() if not s.closed_form}


def configure(spec: Spec, schedules: Mapping[str, Schedule]) -> None:
    """Give each schedule that follows the monitored value the monitor's direction."""
    m = monitor.resolve(spec)
    if m is None:
        return  # check() reports it
    for sched in value_schedules(schedules).values():
        sched.mode = m.mode  # type: ignore[attr-defined]


def observe(schedules: Mapping[str, Schedule], stopping: EarlyStopping, step: int, value: float | None) -> bool:
    """After an evaluation: step the value-following schedules and the early-stopping counter with
    the monitored value; True when the run ends with this evaluation. An evaluation that did not
    measure the monitored quantity counts for neither."""
    if value is None:
        return False
    for sched in value_schedules(schedules).values():
        sched.step(value)  # type: ignore[call-arg]
    return stopping.observe(step, value)


# ---------------------------------------------------------------- validation (called by the compiler)

ErrorFn = Callable[..., None]


def check(spec: Spec, broken: set[str], error: ErrorFn) -> None:
    """E-EVAL-EVERY for early stopping and value-following schedules that have no evaluations to act
    on: no ``train.eval_every``, no eval section, or nothing to monitor."""
    from .optim import SCHEDULES

    train = spec.train
    users: list[tuple[str, tuple[Any, ...]]] = []
    if train is not None and train.early_stopping is not None:
        users.append(("train.early_stopping", ("train", "early_stopping")))
    for name, opt in spec.optimizers.items():
        sched = opt.schedule
        cls = SCHEDULES.get(sched.type) if sched is not None else None
        if cls is not None and not cls.closed_form:
            users.append((f"optimizer {name}'s {cls.name} schedule", ("optimizers", name, "schedule", "type")))
    if not users:
        return
    problem, hint = _missing(spec, broken)
    if problem is None:
        return
    for what, path in users:
        error(
            "E-EVAL-EVERY",
            f"{what} acts on the evaluations of train.monitor during training, but {problem}",
            path,
            key=path[-1] != "type",
            hint=hint,
        )


def _missing(spec: Spec, broken: set[str]) -> tuple[str | None, str | None]:
    """What keeps evaluations of a monitored quantity from happening during training (and the fix),
    or (None, None) when nothing does or another diagnostic says it already."""
    from .data.sources import live_source

    train = spec.train
    if train is None:
        return None, None  # nothing trains: nothing to act on (the spec is evaluated only)
    if not train.eval_every:
        return (
            "train.eval_every is not set, so the run never evaluates while it trains",
            "add train.eval_every: N (evaluate every N iterations; early-stopping patience counts these)",
        )
    if spec.eval is None and live_source(spec) is None:
        if "<eval>" in broken:
            return None, None
        return "the spec has no eval section, so there is nothing to evaluate", "add eval: {split: test}"
    if monitor.resolve(spec) is None:
        if train.monitor is not None or "<train.monitor>" in broken:
            return None, None  # E-MONITOR says what is wrong with it
        return (
            "nothing is monitored (the evaluation reports no quantity with a direction)",
            "declare train.monitor: {metric: NAME, mode: min|max}",
        )
    return None, None
