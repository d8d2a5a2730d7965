"""Optimizers, gradient clipping and learning-rate schedules (torch.optim's rules and defaults).

``OPTIMIZERS`` and ``SCHEDULES`` map the snake_case names that specs use to the classes. A new
optimizer or schedule is one class (its hyper-parameters declared once, in its ``hypers`` table:
see hyper.py) added with ``register``; the spec schema follows the registries (it listens
through ``on_registry_change``)."""

from collections.abc import Callable
from typing import Any, TypeVar

from .clip import clip_grad_norm, clip_grad_value
from .hyper import Count, Finite, Flag, Hyper, LearningRate, NonNegative, PositiveOrNone, Real, Rule, UnitPair
from .optimizers import SGD, Adam, AdamW, Optimizer, RMSprop
from .schedules import (
    Choice,
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    ReduceLROnPlateau,
    Schedule,
    StepLR,
    WarmupCosine,
)

# By the name each class declares (the spec's ``type:``), in the order the docs list them.
OPTIMIZERS: dict[str, type[Optimizer]] = {c.name: c for c in (SGD, Adam, AdamW, RMSprop)}
SCHEDULES: dict[str, type[Schedule]] = {
    c.name: c for c in (StepLR, ExponentialLR, CosineAnnealingLR, LinearLR, WarmupCosine, ReduceLROnPlateau)
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
    _check_declaration(cls, "optimizer" if registry is OPTIMIZERS else "schedule")
    if cls.name in registry:
        raise ValueError(f"an {'optimizer' if registry is OPTIMIZERS else 'schedule'} named {cls.name!r} exists")
    registry[cls.name] = cls
    _changed()
    return cls


def _check_declaration(cls: type, kind: str) -> None:
    """Refuse a class that could not work, naming what to declare, before specs can name it."""
    own = cls.__dict__
    if not isinstance(own.get("name"), str) or not own["name"]:
        raise ValueError(f"{cls.__name__}: declare the {kind}'s registry name as a class attribute, name = '...'")
    hypers = own.get("hypers", getattr(cls, "hypers", ()))
    if not all(isinstance(h, Hyper) for h in hypers):
        raise TypeError(f"{cls.__name__}: hypers must be a tuple of onlytorch.optim.Hyper entries")
    if kind == "optimizer":
        if not hypers or hypers[0].name != "lr":
            raise ValueError(
                f"{cls.__name__}: an optimizer's first hyper-parameter is its learning rate, Hyper('lr', ...)"
            )
        if not callable(getattr(cls, "buffer_names", None)):
            raise TypeError(f"{cls.__name__}: buffer_names must be a classmethod (cls, hyper) -> tuple of buffer names")
    elif getattr(cls, "lr_at", None) is getattr(Schedule, "lr_at", None):
        raise TypeError(f"{cls.__name__}: a schedule gives the learning rate of step t in lr_at(self, t)")


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
    "Choice",
    "CosineAnnealingLR",
    "Count",
    "ExponentialLR",
    "Finite",
    "Flag",
    "Hyper",
    "LearningRate",
    "LinearLR",
    "NonNegative",
    "Optimizer",
    "PositiveOrNone",
    "RMSprop",
    "Real",
    "ReduceLROnPlateau",
    "Rule",
    "Schedule",
    "StepLR",
    "UnitPair",
    "WarmupCosine",
    "clip_grad_norm",
    "clip_grad_value",
    "on_registry_change",
    "register",
    "unregister",
]
