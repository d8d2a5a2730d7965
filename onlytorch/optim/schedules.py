"""Learning-rate schedules: each sets ``opt.lr`` from a closed form of the step count.

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
from typing import Any

import numpy as np

from ..checkpoint import describe, invalid_hyper_message, saved_state
from ..errors import GraphError
from .optimizers import Optimizer, _check_lr


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


class Schedule:
    """The shared machinery. A subclass declares ``name``, ``_hyper_names``, validates its
    hyper-parameters in ``_check`` and gives the lr of step t in ``lr_at``."""

    name = "schedule"
    _hyper_names: tuple[str, ...] = ()

    def __init__(self, optimizer: Optimizer, **hyper: Any) -> None:
        if not isinstance(optimizer, Optimizer):
            raise GraphError(f"{type(self).__name__} needs an onlytorch optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self._set_hyper(self._check(hyper))
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0
        self._apply()

    def _check(self, h: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

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
            checked = self._check(dict(hyper))
        except GraphError as e:
            raise GraphError(f"{lead}{self._invalid_hyper(hyper, where, e)}") from None
        lrs = {}
        for k in ("base_lr", "last_lr"):
            try:
                lrs[k] = _check_lr(owner, float(d[k]))
            except GraphError as e:
                raise GraphError(f"{lead}'{where}{k}' is invalid: {e}") from None
        return checked, lrs["base_lr"], int(last_epoch), lrs["last_lr"]

    def _invalid_hyper(self, saved: dict[str, Any], where: str, error: GraphError) -> str:
        return invalid_hyper_message(self._check, {k: getattr(self, k) for k in self._hyper_names}, saved, where, error)

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


def _count(owner: str, h: dict[str, Any], key: str, low: int) -> None:
    v = h[key]
    if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)) or v < low:
        raise GraphError(f"{owner}: {key} must be an integer >= {low}, got {v!r}")
    h[key] = int(v)


def _real(
    owner: str, h: dict[str, Any], key: str, low: float = 0.0, high: float = math.inf, low_open: bool = False
) -> None:
    v = h[key]
    ok = _is_number(v) and (low < v if low_open else low <= v) and v <= high and math.isfinite(v)
    if not ok:
        bound = f"in ({low}, {high}]" if low_open else (f"in [{low}, {high}]" if high < math.inf else f">= {low}")
        raise GraphError(f"{owner}: {key} must be a finite number {bound}, got {v!r}")
    h[key] = float(v)


class StepLR(Schedule):
    """lr = base_lr * gamma ** (t // step_size) (torch.optim.lr_scheduler.StepLR)."""

    step_size: int
    gamma: float

    name = "step_lr"
    _hyper_names = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer, step_size=step_size, gamma=gamma)

    def _check(self, h: dict[str, Any]) -> dict[str, Any]:
        _count("StepLR", h, "step_size", 1)
        _real("StepLR", h, "gamma")
        return h

    def lr_at(self, t: int) -> float:
        return self.base_lr * self.gamma ** (t // self.step_size)


class ExponentialLR(Schedule):
    """lr = base_lr * gamma ** t (torch.optim.lr_scheduler.ExponentialLR)."""

    gamma: float

    name = "exponential_lr"
    _hyper_names = ("gamma",)

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        super().__init__(optimizer, gamma=gamma)

    def _check(self, h: dict[str, Any]) -> dict[str, Any]:
        _real("ExponentialLR", h, "gamma")
        return h

    def lr_at(self, t: int) -> float:
        return self.base_lr * self.gamma**t


class CosineAnnealingLR(Schedule):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2
    (torch.optim.lr_scheduler.CosineAnnealingLR; like torch's, it rises again after T_max)."""

    T_max: int
    eta_min: float

    name = "cosine_annealing_lr"
    _hyper_names = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        super().__init__(optimizer, T_max=T_max, eta_min=eta_min)

    def _check(self, h: dict[str, Any]) -> dict[str, Any]:
        _count("CosineAnnealingLR", h, "T_max", 1)
        _real("CosineAnnealingLR", h, "eta_min")
        return h

    def lr_at(self, t: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class LinearLR(Schedule):
    """lr = base_lr * (start_factor + (end_factor - start_factor) * min(t, total_iters) / total_iters)
    (torch.optim.lr_scheduler.LinearLR: a linear warmup with the defaults)."""

    start_factor: float
    end_factor: float
    total_iters: int

    name = "linear_lr"
    _hyper_names = ("start_factor", "end_factor", "total_iters")

    def __init__(
        self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5
    ) -> None:
        super().__init__(optimizer, start_factor=start_factor, end_factor=end_factor, total_iters=total_iters)

    def _check(self, h: dict[str, Any]) -> dict[str, Any]:
        _real("LinearLR", h, "start_factor", 0.0, 1.0, low_open=True)
        _real("LinearLR", h, "end_factor", 0.0, 1.0)
        _count("LinearLR", h, "total_iters", 1)
        return h

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
    _hyper_names = ("warmup_steps", "total_steps", "eta_min")

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, eta_min: float = 0.0) -> None:
        super().__init__(optimizer, warmup_steps=warmup_steps, total_steps=total_steps, eta_min=eta_min)

    def _check(self, h: dict[str, Any]) -> dict[str, Any]:
        _count("WarmupCosine", h, "warmup_steps", 0)
        _count("WarmupCosine", h, "total_steps", 1)
        if h["warmup_steps"] >= h["total_steps"]:
            raise GraphError(
                f"WarmupCosine: warmup_steps={h['warmup_steps']} must be less than total_steps={h['total_steps']}"
            )
        _real("WarmupCosine", h, "eta_min")
        return h

    def lr_at(self, t: int) -> float:
        w, total = self.warmup_steps, self.total_steps
        if t < w:
            return self.base_lr * t / w
        if t >= total:
            return self.eta_min
        s = (t - w) / (total - w)
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * s)) / 2
