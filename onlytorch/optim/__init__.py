"""Optimizers, gradient clipping and learning-rate schedules (torch.optim's rules and defaults).

``OPTIMIZERS`` and ``SCHEDULES`` map the snake_case names that specs use to the classes. A new
optimizer or schedule is one class (its hyper-parameters declared once, in its ``hypers`` table:
see hyper.py) added with ``register``; the spec schema follows the registries (it listens
through ``on_registry_change``)."""

from collections.abc import Callable
from typing import Any, TypeVar

from .clip import clip_grad_norm, clip_grad_value
from .hyper import Hyper
from .optimizers import SGD, Adam, AdamW, Optimizer, RMSprop
from .schedules import CosineAnnealingLR, ExponentialLR, LinearLR, Schedule, StepLR, WarmupCosine

OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}

SCHEDULES: dict[str, type[Schedule]] = {
    "step_lr": StepLR,
    "exponential_lr": ExponentialLR,
    "cosine_annealing_lr": CosineAnnealingLR,
    "linear_lr": LinearLR,
    "warmup_cosine": WarmupCosine,
}

_C = TypeVar("_C", type[Optimizer], type[Schedule])
_listeners: list[Callable[[], None]] = []


def _registry(cls: Any) -> dict[str, Any]:
    if isinstance(cls, type) and issubclass(cls, Optimizer):
        return OPTIMIZERS
    if isinstance(cls, type) and issubclass(cls, Schedule):
        return SCHEDULES
    raise TypeError(f"register takes an Optimizer or Schedule subclass, got {cls!r}")


def register(cls: _C) -> _C:
    """Add an Optimizer or Schedule subclass under its ``name`` (usable as a decorator); specs
    can then use ``type: <name>``."""
    registry = _registry(cls)
    if cls.name in registry:
        raise ValueError(f"an {'optimizer' if registry is OPTIMIZERS else 'schedule'} named {cls.name!r} exists")
    registry[cls.name] = cls
    _changed()
    return cls


def unregister(cls: type[Optimizer] | type[Schedule]) -> None:
    """Remove a class that ``register`` added."""
    registry = _registry(cls)
    if registry.get(cls.name) is not cls:
        raise ValueError(f"{cls.__name__} is not registered")
    del registry[cls.name]
    _changed()


def on_registry_change(callback: Callable[[], None]) -> None:
    """Call callback after every register/unregister (the spec schema rebuilds its models)."""
    _listeners.append(callback)


def _changed() -> None:
    for callback in _listeners:
        callback()


__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "SGD",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "ExponentialLR",
    "Hyper",
    "LinearLR",
    "Optimizer",
    "RMSprop",
    "Schedule",
    "StepLR",
    "WarmupCosine",
    "clip_grad_norm",
    "clip_grad_value",
    "on_registry_change",
    "register",
    "unregister",
]
