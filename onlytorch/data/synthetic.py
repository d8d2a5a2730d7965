"""Synthetic data generators: small, seeded, vectorised (10,000 samples take milliseconds)."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field as Param
from pydantic import field_validator

from .sources import FieldRow, FieldTable, LoadContext, Params, Source, register

_N = Param(1000, gt=0, description="number of samples")
_NOISE = "standard deviation of the Gaussian noise added to each coordinate"


def ring_centres(modes: int, radius: float) -> np.ndarray:
    """The (modes, 2) centres of synthetic.ring: equal angles from 0 on a circle of the given radius."""
    angle = 2.0 * np.pi * np.arange(modes) / modes
    return radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)


def grid_centres(side: int, spacing: float) -> np.ndarray:
    """The (side*side, 2) centres of synthetic.grid, centred at 0; mode m sits at (coord[m // side], coord[m % side])."""
    coord = (np.arange(side) - (side - 1) / 2.0) * spacing
    return np.stack(np.meshgrid(coord, coord, indexing="ij"), axis=-1).reshape(-1, 2)


def _rng(ctx: LoadContext) -> np.random.Generator:
    return np.random.default_rng(ctx.seed)


def _balanced_labels(rng: np.random.Generator, n: int, classes: int) -> np.ndarray:
    """n labels in shuffled order whose class counts differ by at most one."""
    return rng.permutation(np.arange(n) % classes).astype(np.int64)


# ---------------------------------------------------------------- xor


class XorParams(Params):
    n: int = Param(200, gt=0, description="number of samples, spread evenly over the 4 corners")
    noise: float = Param(0.1, ge=0, description=_NOISE)


def _xor(p: XorParams, ctx: LoadContext) -> dict[str, np.ndarray]:
    rng = _rng(ctx)
    corner = rng.permutation(np.arange(p.n) % 4)
    bits = np.stack([corner // 2, corner % 2], axis=1)
    x = bits + p.noise * rng.standard_normal((p.n, 2))
    return {"x": x, "y": (bits[:, :1] ^ bits[:, 1:]).astype(np.float64)}


register(
    Source(
        name="synthetic.xor",
        params=XorParams,
        fields=FieldTable(
            (
                FieldRow("x", "float", (2,), "a corner of the unit square (0 or 1 per coordinate) plus noise"),
                FieldRow("y", "float", (1,), "1.0 where exactly one coordinate's corner is 1, else 0.0"),
            )
        ),
        load=_xor,
        doc="The XOR problem: the unit square's 4 corners, jittered; not linearly separable.",
    )
)


# ---------------------------------------------------------------- moons


class MoonsParams(Params):
    n: int = _N
    noise: float = Param(0.1, ge=0, description=_NOISE)


def _moons(p: MoonsParams, ctx: LoadContext) -> dict[str, np.ndarray]:
    rng = _rng(ctx)
    y = _balanced_labels(rng, p.n, 2)
    t = rng.uniform(0.0, np.pi, p.n)
    # Class 0 is the upper half circle; class 1 the lower one, shifted right and up to interleave.
    x = np.where(
        (y == 0)[:, None],
        np.stack([np.cos(t), np.sin(t)], axis=1),
        np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1),
    )
    return {"x": x + p.noise * rng.standard_normal((p.n, 2)), "y": y}


register(
    Source(
        name="synthetic.moons",
        params=MoonsParams,
        fields=FieldTable(
            (
                FieldRow("x", "float", (2,), "a point on one of two interleaving half circles, plus noise"),
                FieldRow("y", "int64", (), "the half circle: 0 (upper) or 1 (lower)", classes=2),
            )
        ),
        load=_moons,
        doc="Two interleaving half circles (as scikit-learn's make_moons); classes balanced.",
    )
)


# ---------------------------------------------------------------- spirals


class SpiralsParams(Params):
    n: int = _N
    classes: int = Param(2, ge=2, description="number of spiral arms, one class each")
    turns: float = Param(1.0, gt=0, description="full turns each arm makes from the centre to radius 1")
    noise: float = Param(0.05, ge=0, description=_NOISE)


def _spirals(p: SpiralsParams, ctx: LoadContext) -> dict[str, np.ndarray]:
    rng = _rng(ctx)
    y = _balanced_labels(rng, p.n, p.classes)
    r = rng.uniform(0.05, 1.0, p.n)
    angle = 2.0 * np.pi * (p.turns * r + y / p.classes)
    x = r[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return {"x": x + p.noise * rng.standard_normal((p.n, 2)), "y": y}


register(
    Source(
        name="synthetic.spirals",
        params=SpiralsParams,
        fields=FieldTable(
            (
                FieldRow("x", "float", (2,), "a point on one of the spiral arms (radius up to 1), plus noise"),
                FieldRow("y", "int64", (), "the arm", classes="classes"),
            )
        ),
        load=_spirals,
        doc="Interleaved spiral arms around the origin, one class per arm; classes balanced.",
    )
)


# ---------------------------------------------------------------- ring and grid (GAN targets)


class RingParams(Params):
    n: int = _N
    modes: int = Param(8, gt=0, description="number of Gaussians, at equal angles starting from angle 0")
    radius: float = Param(2.0, gt=0, description="radius of the circle the Gaussians' centres lie on")
    std: float = Param(0.02, ge=0, description="standard deviation of each Gaussian")


def _mixture(rng: np.random.Generator, n: int, centres: np.ndarray, std: float) -> dict[str, np.ndarray]:
    mode = rng.integers(0, len(centres), n).astype(np.int64)
    return {"x": centres[mode] + std * rng.standard_normal((n, 2)), "mode": mode}


register(
    Source(
        name="synthetic.ring",
        params=RingParams,
        fields=FieldTable(
            (
                FieldRow("x", "float", (2,), "a sample of the mixture"),
                FieldRow(
                    "mode",
                    "int64",
                    (),
                    "the Gaussian it was drawn from (its centre: ring_centres()[mode])",
                    classes="modes",
                ),
            )
        ),
        load=lambda p, ctx: _mixture(_rng(ctx), p.n, ring_centres(p.modes, p.radius), p.std),
        doc="A ring of equally weighted Gaussians, the classic GAN mode-collapse test.",
        modes=lambda p: (ring_centres(p.modes, p.radius), p.std),
    )
)


class GridParams(Params):
    n: int = _N
    side: int = Param(5, gt=0, description="the grid has side x side Gaussians")
    spacing: float = Param(2.0, gt=0, description="distance between neighbouring centres; the grid is centred at 0")
    std: float = Param(0.02, ge=0, description="standard deviation of each Gaussian")


register(
    Source(
        name="synthetic.grid",
        params=GridParams,
        fields=FieldTable(
            (
                FieldRow("x", "float", (2,), "a sample of the mixture"),
                FieldRow(
                    "mode",
                    "int64",
                    (),
                    "the Gaussian it was drawn from (its centre: grid_centres()[mode])",
                    classes="side * side",
                ),
            )
        ),
        load=lambda p, ctx: _mixture(_rng(ctx), p.n, grid_centres(p.side, p.spacing), p.std),
        doc="A side x side grid of equally weighted Gaussians centred at 0 (WGAN-GP's 5x5 grid: -4, -2, 0, 2, 4).",
        modes=lambda p: (grid_centres(p.side, p.spacing), p.std),
    )
)


# ---------------------------------------------------------------- sine sequences


class SineParams(Params):
    n: int = Param(256, gt=0, description="number of sequences")
    length: int = Param(50, gt=0, description="time steps per sequence")
    noise: float = Param(0.0, ge=0, description="standard deviation of the Gaussian noise added to each value")
    freq_range: tuple[float, float] = Param(
        (0.02, 0.08), description="each sequence's frequency is drawn uniformly from this range, in cycles per step"
    )
    amplitude_jitter: float = Param(
        0.1, ge=0, lt=1, description="amplitudes are drawn uniformly from 1 - jitter .. 1 + jitter"
    )

    @field_validator("freq_range")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 0.5:
            raise ValueError("needs 0 < low <= high <= 0.5 cycles per step")
        return v


def _sine(p: SineParams, ctx: LoadContext) -> dict[str, np.ndarray]:
    rng = _rng(ctx)
    freq = rng.uniform(*p.freq_range, (p.n, 1))
    amp = rng.uniform(1.0 - p.amplitude_jitter, 1.0 + p.amplitude_jitter, (p.n, 1))
    phase = rng.uniform(0.0, 2.0 * math.pi, (p.n, 1))
    # One series one step longer than asked, so that y is exactly x shifted by one step (noise included).
    s = amp * np.sin(2.0 * math.pi * freq * np.arange(p.length + 1) + phase)
    s = s + p.noise * rng.standard_normal(s.shape)
    return {"x": s[:, :-1, None], "y": s[:, 1:, None]}


register(
    Source(
        name="synthetic.sine",
        params=SineParams,
        fields=FieldTable(
            (
                FieldRow("x", "float", ("length", 1), "the (noisy) sine, one value per time step"),
                FieldRow("y", "float", ("length", 1), "the next value at each step: x shifted left by one step"),
            )
        ),
        load=_sine,
        doc="Sine sequences with random frequency, amplitude and phase for one-step-ahead prediction (truncated BPTT).",
    )
)


# ---------------------------------------------------------------- linear regression


class RegressionParams(Params):
    n: int = _N
    features: int = Param(3, gt=0, description="number of input features")
    noise: float = Param(0.1, ge=0, description="standard deviation of the Gaussian noise added to y")


def _regression(p: RegressionParams, ctx: LoadContext) -> dict[str, np.ndarray]:
    rng = _rng(ctx)
    w_true = rng.standard_normal((p.features, 1))
    x = rng.standard_normal((p.n, p.features))
    return {"x": x, "y": x @ w_true + p.noise * rng.standard_normal((p.n, 1))}


register(
    Source(
        name="synthetic.regression",
        params=RegressionParams,
        fields=FieldTable(
            (
                FieldRow("x", "float", ("features",), "standard normal features"),
                FieldRow("y", "float", (1,), "x @ w_true + noise, w_true standard normal (drawn from the seed)"),
            )
        ),
        load=_regression,
        doc="Linear regression: y = x @ w_true + noise, no bias.",
    )
)


# ---------------------------------------------------------------- token sequences


class ReverseParams(Params):
    n: int = Param(1000, gt=0, description="number of sequences")
    length: int = Param(8, gt=0, description="tokens per sequence")
    vocab: int = Param(10, ge=2, description="tokens are the integers 0 .. vocab - 1")


def _reverse(p: ReverseParams, ctx: LoadContext) -> dict[str, np.ndarray]:
    x = _rng(ctx).integers(0, p.vocab, (p.n, p.length), dtype=np.int64)
    return {"x": x, "y": np.ascontiguousarray(x[:, ::-1])}


register(
    Source(
        name="synthetic.reverse",
        params=ReverseParams,
        fields=FieldTable(
            (
                FieldRow(
                    "x", "int64", ("length",), "a sequence of tokens, each uniform over the vocabulary", classes="vocab"
                ),
                FieldRow(
                    "y",
                    "int64",
                    ("length",),
                    "the same tokens in reverse order: y[i] = x[length - 1 - i]",
                    classes="vocab",
                ),
            )
        ),
        load=_reverse,
        # Each split is drawn from its own seed, so held-out sequences are independent draws; they
        # are not filtered against the train split: with n_train and n_test sequences out of
        # vocab ** length, about n_train * n_test / vocab ** length of them repeat one.
        doc="Sequence reversal: uniform random token sequences and the same tokens in reverse order "
        "(a sequence-to-sequence task for attention; each split drawn from its own seed).",
    )
)
