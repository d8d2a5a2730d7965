"""Learning-rate schedules: each sets ``opt.lr`` from a closed form of the step count, except
``ReduceLROnPlateau``, which follows a monitored value (``closed_form = False``: the trainer steps
it on every evaluation of ``train.monitor``, with the value).

A schedule's hyper-parameters are declared once, in its ``hypers`` table (see hyper.py): the
constructor's signature, its validation (``check_hyper``), the spec schema and the docs read it.

``Sched(opt, ...)`` takes ``base_lr = opt.lr`` and sets the lr for step 0 at once (as torch's
schedulers do at construction); ``step()``, called after ``opt.step()``, advances to the next
step's lr. The four torch schedules give torch.optim.lr_scheduler's sequences: torch computes them
recursively (multiplying the current lr), which equals the closed forms used here up to rounding;
a closed form does not drift and resumes exactly. One consequence: a schedule owns the lr, so a
change made to ``opt.lr`` by hand lasts only until the next ``step()``, and two schedules on one
optimizer do not compose (use ``WarmupCosine`` for warmup followed by decay).

``state_dict()`` is a flat ``dict[str, np.ndarray]`` (``"schedule"``, ``"last_epoch"``,
``"base_lr"``, ``"last_lr"`` and ``"hyper/<name>"``, plus a subclass's ``_state_keys``: the
plateau's mode, best value and counters), saved with ``np.savez`` like the optimizer's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..checkpoint import describe, invalid_hyper_message, saved_state
from ..errors import GraphError
from ..suggest import did_you_mean_suffix
from . import hyper as H
from .hyper import Hyper, Rule, check_lr
from .optimizers import Optimizer


class Schedule:
    """The shared machinery. A subclass declares ``name``, ``hypers`` (its hyper-parameters:
    name, default, description, range), ``_check_together`` (rules between them, if any) and
    gives the lr of step t in ``lr_at`` (reading only its hyper-parameters and ``base_lr``)."""

    name = "schedule"
    hypers: ClassVar[tuple[Hyper, ...]] = ()
    _hyper_names: tuple[str, ...] = ()  # derived from hypers
    # the state_dict's entries beyond the shared ones (a subclass with state of its own parses them)
    _state_keys: ClassVar[tuple[str, ...]] = ()
    # True: the lr is a function of the step count (lr_at), stepped after every step of its optimizer.
    # False: it follows the monitored values, stepped after every evaluation of train.monitor with
    # the value (``step(value)``; ReduceLROnPlateau)
    closed_form: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._hyper_names = tuple(h.name for h in cls.hypers)
        H.declared_init(cls, ("optimizer",))

    def __init__(self, optimizer: Optimizer, *args: Any, **kwargs: Any) -> None:
        given = H.bind(type(self).__name__, self.hypers, args, kwargs)
        if not isinstance(optimizer, Optimizer):
            raise GraphError(f"{type(self).__name__} needs an onlytorch optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self._set_hyper(self.check_hyper(given))
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0
        self._apply()

    @classmethod
    def check_hyper(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and normalise hyper-parameter values against the ``hypers`` table (a missing
        one takes its default); GraphError naming the value at fault otherwise."""
        checked = H.check_values(cls.__name__, cls.hypers, values)
        cls._check_together(checked)
        return checked

    @classmethod
    def check_for(cls, values: Mapping[str, Any], optimizer: type[Optimizer], lr: float) -> dict[str, Any]:
        """What building this schedule on an optimizer of that class with that (valid) lr checks,
        without building either: the hyper-parameters, then the lr it sets at once."""
        checked = cls.check_hyper(values)
        # lr_at reads only the hyper-parameters and base_lr, so a bare instance can evaluate it.
        probe = cls.__new__(cls)
        probe._set_hyper(checked)
        probe.base_lr = float(lr)
        check_lr(optimizer.__name__, probe.lr_at(0))
        return checked

    @classmethod
    def _check_together(cls, h: dict[str, Any]) -> None:
        """Rules between checked hyper-parameters (raise GraphError); none by default."""

    def _set_hyper(self, h: dict[str, Any]) -> None:
        for k in self._hyper_names:
            setattr(self, k, h[k])

    def lr_at(self, t: int) -> float:
        """The learning rate of step t (0 is the one set at construction)."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance to the next step's learning rate (call it after ``opt.step()``)."""
        self.last_epoch += 1
        self._apply()

    def _apply(self) -> None:
        lr = self.lr_at(self.last_epoch)
        self.optimizer.lr = lr
        self._last_lr = self.optimizer.lr

    def get_last_lr(self) -> float:
        """The learning rate this schedule set last (one number: an optimizer has one lr)."""
        return self._last_lr

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {
            "schedule": np.array(self.name),
            "last_epoch": np.array(self.last_epoch, dtype=np.int64),
            "base_lr": np.array(self.base_lr, dtype=np.float64),
            "last_lr": np.array(self._last_lr, dtype=np.float64),
        }
        for k in self._hyper_names:
            out[f"hyper/{k}"] = np.array(getattr(self, k))
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()``, also an ``np.load`` result, checking it first; sets the
        optimizer's lr to the restored schedule's current lr."""
        self._apply_state(self._parse_state(state))

    def check_state_dict(self, state: Mapping[str, Any], where: str = "", lead: str | None = None) -> None:
        """Raise GraphError unless load_state_dict(state) would succeed; changes nothing (``where``
        and ``lead`` as in Optimizer.check_state_dict)."""
        self._parse_state(state, where, lead)

    def _parse_state(self, state: Mapping[str, Any], where: str = "", lead: str | None = None) -> tuple[Any, ...]:
        owner = type(self).__name__
        lead = f"{owner}.load_state_dict: " if lead is None else lead
        d = saved_state(state, "schedule", self.name, owner, lead, where)
        expected = {"schedule", "last_epoch", "base_lr", "last_lr", *self._state_keys}
        expected |= {f"hyper/{k}" for k in self._hyper_names}
        missing, extra = sorted(expected - set(d)), sorted(set(d) - expected)
        if missing or extra:
            raise GraphError(
                f"{lead}missing entries {[where + k for k in missing]}, unexpected entries {[where + k for k in extra]}"
            )
        last_epoch = d["last_epoch"]
        if last_epoch.shape != () or last_epoch.dtype.kind not in "iu" or int(last_epoch) < 0:
            raise GraphError(f"{lead}{where}last_epoch must be an integer >= 0, got {describe(last_epoch)}")
        for k in ("base_lr", "last_lr", *(f"hyper/{h.name}" for h in self.hypers if h.rule.kind != "str")):
            if d[k].shape != () or d[k].dtype.kind not in "fiu":
                raise GraphError(f"{lead}'{where}{k}' holds {describe(d[k])}, not a number")
        for k in (f"hyper/{h.name}" for h in self.hypers if h.rule.kind == "str"):
            if d[k].shape != () or d[k].dtype.kind != "U":
                raise GraphError(f"{lead}'{where}{k}' holds {describe(d[k])}, not a name")
        hyper = {k: d[f"hyper/{k}"].item() for k in self._hyper_names}
        try:
            checked = self.check_hyper(hyper)
        except GraphError as e:
            raise GraphError(f"{lead}{self._invalid_hyper(hyper, where, e)}") from None
        lrs = {}
        for k in ("base_lr", "last_lr"):
            try:
                lrs[k] = check_lr(owner, float(d[k]))
            except GraphError as e:
                raise GraphError(f"{lead}'{where}{k}' is invalid: {e}") from None
        return checked, lrs["base_lr"], int(last_epoch), lrs["last_lr"]

    def _invalid_hyper(self, saved: dict[str, Any], where: str, error: GraphError) -> str:
        return invalid_hyper_message(
            self.check_hyper, {k: getattr(self, k) for k in self._hyper_names}, saved, where, error
        )

    def _apply_state(self, parsed: tuple[Any, ...]) -> None:
        checked, base_lr, last_epoch, last_lr = parsed
        self._set_hyper(checked)
        self.base_lr = base_lr
        self.last_epoch = last_epoch
        self.optimizer.lr = last_lr
        self._last_lr = last_lr

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyper_names)
        return f"{type(self).__name__}({hyper}, base_lr={self.base_lr!r}, last_epoch={self.last_epoch})"


_ETA_MIN = Hyper("eta_min", 0.0, "the smallest learning rate", H.Real())


class StepLR(Schedule):
    """lr = base_lr * gamma ** (t // step_size) (torch.optim.lr_scheduler.StepLR)."""

    step_size: int
    gamma: float

    name = "step_lr"
    hypers: ClassVar[tuple[Hyper, ...]] = (
        Hyper("step_size", H.REQUIRED, "steps between decays", H.Count(1)),
        Hyper("gamma", 0.1, "multiplicative decay factor", H.Real()),
    )

    def lr_at(self, t: int) -> float:
        return self.base_lr * self.gamma ** (t // self.step_size)


class ExponentialLR(Schedule):
    """lr = base_lr * gamma ** t (torch.optim.lr_scheduler.ExponentialLR)."""

    gamma: float

    name = "exponential_lr"
    hypers: ClassVar[tuple[Hyper, ...]] = (Hyper("gamma", H.REQUIRED, "multiplicative decay factor", H.Real()),)

    def lr_at(self, t: int) -> float:
        return self.base_lr * self.gamma**t


class CosineAnnealingLR(Schedule):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2
    (torch.optim.lr_scheduler.CosineAnnealingLR; like torch's, it rises again after T_max)."""

    T_max: int
    eta_min: float

    name = "cosine_annealing_lr"
    hypers: ClassVar[tuple[Hyper, ...]] = (
        Hyper("T_max", H.REQUIRED, "steps of a half cosine period", H.Count(1)),
        _ETA_MIN,
    )

    def lr_at(self, t: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class LinearLR(Schedule):
    """lr = base_lr * (start_factor + (end_factor - start_factor) * min(t, total_iters) / total_iters)
    (torch.optim.lr_scheduler.LinearLR: a linear warmup with the defaults)."""

    start_factor: float
    end_factor: float
    total_iters: int

    name = "linear_lr"
    hypers: ClassVar[tuple[Hyper, ...]] = (
        Hyper(
            "start_factor",
            1.0 / 3,
            "the factor on the learning rate at the first step",
            H.Real(0.0, 1.0, low_open=True),
        ),
        Hyper("end_factor", 1.0, "the factor at the end of the warmup", H.Real(0.0, 1.0)),
        Hyper("total_iters", 5, "steps of the linear warmup", H.Count(1)),
    )

    def lr_at(self, t: int) -> float:
        sf, ef = self.start_factor, self.end_factor
        return self.base_lr * (sf + (ef - sf) * min(self.total_iters, t) / self.total_iters)


class WarmupCosine(Schedule):
    """Linear warmup from 0, then cosine decay to eta_min (our own schedule):

    - ``t < warmup_steps``: lr = base_lr * t / warmup_steps (so the first step has lr 0);
    - ``warmup_steps <= t < total_steps``: lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * s)) / 2
      with s = (t - warmup_steps) / (total_steps - warmup_steps);
    - ``t >= total_steps``: lr = eta_min.

    With eta_min = 0 this is HuggingFace's ``get_cosine_schedule_with_warmup`` up to total_steps."""

    warmup_steps: int
    total_steps: int
    eta_min: float

    name = "warmup_cosine"
    hypers: ClassVar[tuple[Hyper, ...]] = (
        Hyper("warmup_steps", H.REQUIRED, "steps of linear warmup from 0 (less than total_steps)", H.Count(0)),
        Hyper("total_steps", H.REQUIRED, "steps until the cosine reaches eta_min", H.Count(1)),
        _ETA_MIN,
    )

    @classmethod
    def _check_together(cls, h: dict[str, Any]) -> None:
        if h["warmup_steps"] >= h["total_steps"]:
            raise GraphError(
                f"{cls.__name__}: warmup_steps={h['warmup_steps']} must be less than total_steps={h['total_steps']}"
            )

    def lr_at(self, t: int) -> float:
        w, total = self.warmup_steps, self.total_steps
        if t < w:
            return self.base_lr * t / w
        if t >= total:
            return self.eta_min
        s = (t - w) / (total - w)
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * s)) / 2


# ---------------------------------------------------------------- on a plateau of the monitored value


@dataclass(frozen=True)
class Choice(Rule):
    """One of a few names (ReduceLROnPlateau's threshold_mode)."""

    kind: ClassVar[str] = "str"
    options: tuple[str, ...] = ()

    def check(self, owner: str, key: str, v: Any) -> str:
        if isinstance(v, np.str_):
            v = str(v)
        if not isinstance(v, str) or v not in self.options:
            raise GraphError(
                f"{owner}: {key} must be one of {', '.join(self.options)}, got {v!r}"
                + did_you_mean_suffix(v, self.options)
            )
        return v

    def text(self) -> str:
        return "one of " + ", ".join(self.options)

    def json(self) -> dict[str, Any]:
        return {"enum": list(self.options)}


@dataclass(frozen=True)
class _Factor(Rule):
    """A finite number in [0, 1) (torch refuses a factor of 1 or more: it would never reduce)."""

    def check(self, owner: str, key: str, v: Any) -> float:
        if not H.is_number(v) or not (0.0 <= v < 1.0):
            raise GraphError(f"{owner}: {key} must be a finite number in [0, 1), got {v!r}")
        return float(v)

    def text(self) -> str:
        return "in [0, 1)"

    def json(self) -> dict[str, Any]:
        return {"minimum": 0, "exclusiveMaximum": 1}


MODES = ("min", "max")


class ReduceLROnPlateau(Schedule):
    """Multiply the lr by ``factor`` when the monitored quantity stops improving
    (torch.optim.lr_scheduler.ReduceLROnPlateau, the same rule step for step).

    It steps on evaluations, not on optimizer steps: ``step(value)`` takes the monitored value (in a
    spec, ``train.monitor``'s value at each evaluation, ``train.eval_every``) and ``mode`` is its
    direction ("min": lower is better; in a spec the monitor's, never written in the schedule).
    A value is an improvement when it beats ``best`` by the threshold: ``value < best * (1 -
    threshold)`` (min, rel), ``value < best - threshold`` (min, abs), ``value > best * (1 +
    threshold)`` (max, rel), ``value > best + threshold`` (max, abs); a NaN never is. More than
    ``patience`` evaluations in a row without one set lr = max(lr * factor, min_lr) (unless that
    changes it by eps or less) and start ``cooldown`` evaluations during which bad ones are not
    counted. ``step()`` without a value (the trainer's call after every optimizer step) changes
    nothing: between evaluations the lr holds. ``last_epoch`` counts the evaluations stepped."""

    factor: float
    patience: int
    threshold: float
    threshold_mode: str
    cooldown: int
    min_lr: float
    eps: float

    name = "reduce_on_plateau"
    closed_form = False
    hypers: ClassVar[tuple[Hyper, ...]] = (
        Hyper("factor", 0.1, "multiplies the learning rate on a plateau", _Factor()),
        Hyper("patience", 10, "evaluations without improvement tolerated; the lr drops at the next one", H.Count(0)),
        Hyper("threshold", 1e-4, "how much better than the best a value must be to count as an improvement", H.Real()),
        Hyper(
            "threshold_mode",
            "rel",
            "rel: the threshold is relative to the best value (best * (1 -/+ threshold)); abs: absolute "
            "(best -/+ threshold)",
            Choice(("rel", "abs")),
        ),
        Hyper("cooldown", 0, "evaluations after a reduction during which none is counted bad", H.Count(0)),
        Hyper("min_lr", 0.0, "the learning rate never goes below this", H.Real()),
        Hyper("eps", 1e-8, "a reduction smaller than this is skipped", H.Real()),
    )
    _state_keys = ("mode", "best", "num_bad_epochs", "cooldown_counter")

    def __init__(self, optimizer: Optimizer, *args: Any, **kwargs: Any) -> None:
        super().__init__(optimizer, *args, **kwargs)
        self._mode = "min"
        self.best = math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    # the table's signature (mode is set apart: in a spec it is the monitor's, never a schedule key)
    __init__.__signature__ = H.signature(hypers, ("self", "optimizer"))  # type: ignore[attr-defined]

    @property
    def mode(self) -> str:
        """The monitored quantity's direction: "min" (lower is better, the default) or "max". Set
        it before the first ``step(value)``."""
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        Choice(MODES).check(type(self).__name__, "mode", mode)
        if self.last_epoch:
            raise GraphError(f"{type(self).__name__}: set mode before the first step(value), not after")
        self._mode = mode
        self.best = self._worst()

    def _worst(self) -> float:
        return math.inf if self._mode == "min" else -math.inf

    def lr_at(self, t: int) -> float:
        """The lr before any evaluation (t = 0): base_lr. Later ones depend on the monitored values,
        which a step count does not tell."""
        if t != 0:
            raise GraphError(f"{type(self).__name__}: the lr after step 0 depends on the monitored values; read opt.lr")
        return self.base_lr

    def is_better(self, value: float, best: float) -> bool:
        """Whether ``value`` improves on ``best`` by the threshold (torch's rule, see the class)."""
        if self._mode == "min":
            return value < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return value > (best * (self.threshold + 1.0) if self.threshold_mode == "rel" else best + self.threshold)

    def step(self, metrics: float | None = None) -> None:  # type: ignore[override]
        """With the monitored value: one plateau step (as torch's ``step(metrics)``). Without: the
        trainer's call after an optimizer step, which changes nothing."""
        if metrics is None:
            return
        current = float(metrics)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad evaluations in a cooldown are not counted
        if self.num_bad_epochs > self.patience:
            old = float(self.optimizer.lr)
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self.optimizer.lr

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            **super().state_dict(),
            "mode": np.array(self._mode),
            "best": np.array(self.best, dtype=np.float64),
            "num_bad_epochs": np.array(self.num_bad_epochs, dtype=np.int64),
            "cooldown_counter": np.array(self.cooldown_counter, dtype=np.int64),
        }

    def _parse_state(self, state: Mapping[str, Any], where: str = "", lead: str | None = None) -> tuple[Any, ...]:
        parsed = super()._parse_state(state, where, lead)
        owner = type(self).__name__
        lead = f"{owner}.load_state_dict: " if lead is None else lead
        d = {k: np.asarray(state[k]) for k in self._state_keys}
        mode = d["mode"]
        if mode.shape != () or mode.dtype.kind != "U" or str(mode) not in MODES:
            raise GraphError(f"{lead}'{where}mode' holds {describe(mode)}, not min or max")
        best = d["best"]
        # the best so far: a finite number, or the worst of its mode before the first value
        worst = math.inf if str(mode) == "min" else -math.inf
        if best.shape != () or best.dtype.kind != "f" or not (math.isfinite(best) or float(best) == worst):
            raise GraphError(f"{lead}'{where}best' holds {describe(best)}, not a finite number")
        counts = []
        for k in ("num_bad_epochs", "cooldown_counter"):
            v = d[k]
            if v.shape != () or v.dtype.kind not in "iu" or int(v) < 0:
                raise GraphError(f"{lead}'{where}{k}' must be an integer >= 0, got {describe(v)}")
            counts.append(int(v))
        return (*parsed, str(mode), float(best), *counts)

    def _apply_state(self, parsed: tuple[Any, ...]) -> None:
        super()._apply_state(parsed[:4])
        self._mode, self.best, self.num_bad_epochs, self.cooldown_counter = parsed[4:]

    def __repr__(self) -> str:
        return (
            f"{super().__repr__()[:-1]}, mode={self._mode!r}, best={self.best!r}, num_bad_epochs={self.num_bad_epochs})"
        )
