"""Learning-rate schedules: each sets ``opt.lr`` from a closed form of the step count.

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
``"base_lr"``, ``"last_lr"`` and ``"hyper/<name>"``), saved with ``np.savez`` like the optimizer's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ..checkpoint import describe, invalid_hyper_message, saved_state
from ..errors import GraphError
from . import hyper as H
from .hyper import Hyper, check_lr
from .optimizers import Optimizer


class Schedule:
    """The shared machinery. A subclass declares ``name``, ``hypers`` (its hyper-parameters:
    name, default, description, range), ``_check_together`` (rules between them, if any) and
    gives the lr of step t in ``lr_at`` (reading only its hyper-parameters and ``base_lr``)."""

    name = "schedule"
    hypers: ClassVar[tuple[Hyper, ...]] = ()
    _hyper_names: tuple[str, ...] = ()  # derived from hypers

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
        expected = {"schedule", "last_epoch", "base_lr", "last_lr"} | {f"hyper/{k}" for k in self._hyper_names}
        missing, extra = sorted(expected - set(d)), sorted(set(d) - expected)
        if missing or extra:
            raise GraphError(
                f"{lead}missing entries {[where + k for k in missing]}, unexpected entries {[where + k for k in extra]}"
            )
        last_epoch = d["last_epoch"]
        if last_epoch.shape != () or last_epoch.dtype.kind not in "iu" or int(last_epoch) < 0:
            raise GraphError(f"{lead}{where}last_epoch must be an integer >= 0, got {describe(last_epoch)}")
        for k in ("base_lr", "last_lr", *(f"hyper/{h}" for h in self._hyper_names)):
            if d[k].shape != () or d[k].dtype.kind not in "fiu":
                raise GraphError(f"{lead}'{where}{k}' holds {describe(d[k])}, not a number")
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
