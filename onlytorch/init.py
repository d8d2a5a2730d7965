"""Seeded parameter initialisers. Weights are laid out (in, out), so fan_in is the first axis."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .errors import GraphError


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    return int(np.prod(shape[:-1])), shape[-1]


def _gain(nonlinearity: str, a: float) -> float:
    gains = {"linear": 1.0, "sigmoid": 1.0, "tanh": 5.0 / 3, "relu": math.sqrt(2.0)}
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1 + a * a))
    if nonlinearity not in gains:
        raise GraphError(
            f"unknown nonlinearity {nonlinearity!r} for kaiming init; use one of {sorted(gains) + ['leaky_relu']}"
        )
    return gains[nonlinearity]


def _kaiming_std(shape, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    fan_in, fan_out = fans(shape)
    fan = fan_in if mode == "fan_in" else fan_out
    return _gain(nonlinearity, a) / math.sqrt(fan)


INITIALISERS: dict[str, Callable[..., np.ndarray]] = {
    "zeros": lambda rng, shape: np.zeros(shape),
    "ones": lambda rng, shape: np.ones(shape),
    "constant": lambda rng, shape, fill=0.0: np.full(shape, fill),
    "normal": lambda rng, shape, mean=0.0, std=1.0: rng.normal(mean, std, shape),
    "uniform": lambda rng, shape, low=0.0, high=1.0: rng.uniform(low, high, shape),
    "xavier_uniform": lambda rng, shape, gain=1.0: (
        rng.uniform(-1, 1, shape) * (gain * math.sqrt(6.0 / sum(fans(shape))))
    ),
    "xavier_normal": lambda rng, shape, gain=1.0: rng.normal(0.0, gain * math.sqrt(2.0 / sum(fans(shape))), shape),
    "kaiming_uniform": lambda rng, shape, **kw: (
        rng.uniform(-1, 1, shape) * (math.sqrt(3.0) * _kaiming_std(shape, **kw))
    ),
    "kaiming_normal": lambda rng, shape, **kw: rng.normal(0.0, _kaiming_std(shape, **kw), shape),
    # torch.nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias alike.
    "lecun_uniform": lambda rng, shape, fan_in=None: (
        rng.uniform(-1, 1, shape) / math.sqrt(fan_in if fan_in is not None else fans(shape)[0])
    ),
}


def initial_value(rng: np.random.Generator, shape: tuple[int, ...], init: str, dtype: np.dtype, **kw) -> np.ndarray:
    if init not in INITIALISERS:
        from .suggest import did_you_mean_suffix

        hint = did_you_mean_suffix(init, INITIALISERS)
        raise GraphError(f"unknown initialiser {init!r}{hint} (known: {', '.join(INITIALISERS)})")
    try:
        value = INITIALISERS[init](rng, shape, **kw)
    except TypeError as e:
        raise GraphError(f"initialiser {init!r}: {e}") from None
    return np.asarray(value, dtype=dtype)
