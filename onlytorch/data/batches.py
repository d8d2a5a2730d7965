"""Seeded, resumable streams for training: minibatches over epochs, and noise.

Their state is a handful of flat numpy arrays (no pickle), so a checkpoint stores it with
np.savez and a resumed run draws exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .. import checkpoint as ckpt
from ..suggest import did_you_mean_suffix
from .sources import DataError, common_length

_MASK64 = (1 << 64) - 1


def rng_to_array(rng: np.random.Generator) -> np.ndarray:
    """A PCG64 generator's state as six uint64s: state (hi, lo), increment (hi, lo), has_uint32, uinteger."""
    s = rng.bit_generator.state
    if s["bit_generator"] != "PCG64":
        raise TypeError(f"only PCG64 generators are encoded, not {s['bit_generator']}")
    state, inc = s["state"]["state"], s["state"]["inc"]
    words = [state >> 64, state & _MASK64, inc >> 64, inc & _MASK64, s["has_uint32"], s["uinteger"]]
    return np.array(words, dtype=np.uint64)


def rng_from_array(words: np.ndarray) -> np.random.Generator:
    """The generator that rng_to_array encoded; a DataError for anything rng_to_array cannot have
    written (another length, non-integers, negative words, flags out of range)."""
    a = np.asarray(words)
    if a.dtype.kind not in "iu":
        raise DataError(f"a random generator's state is 6 unsigned integers, not {a.dtype} values")
    if a.shape != (6,):
        raise DataError(f"a random generator's state is 6 numbers, not an array of shape {a.shape}")
    if a.dtype.kind == "i" and (a < 0).any():
        raise DataError("a random generator's state holds a negative number")
    w = [int(v) for v in a]
    if w[4] not in (0, 1) or w[5] >= 1 << 32:
        raise DataError(
            f"a random generator's state has has_uint32={w[4]} and uinteger={w[5]} "
            "(they must be 0 or 1, and below 2**32)"
        )
    bit_generator = np.random.PCG64()
    try:
        bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
            "has_uint32": w[4],
            "uinteger": w[5],
        }
    except (ValueError, TypeError, OverflowError) as e:
        raise DataError(f"a random generator's state is not one numpy accepts: {e}") from None
    return np.random.Generator(bit_generator)


def rng_entry(
    state: Mapping[str, Any], key: str, where: str = "", error: type[Exception] = DataError
) -> np.random.Generator:
    """The generator saved under key, its entry named in the error when the state is bad."""
    words = ckpt.entry(state, key, where, error)
    try:
        return rng_from_array(words)
    except DataError as e:
        raise error(f"entry '{where}{key}': {e}") from None


def _required(state: Mapping[str, np.ndarray], keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise DataError(f"{what} state lacks {', '.join(missing)} (it has: {', '.join(state) or 'nothing'})")


def count_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Minibatches in one pass over n samples (a batch_size above n gives one batch of all)."""
    full, rest = divmod(n, min(batch_size, n))
    return full + (1 if rest and not drop_last else 0)


class Batches:
    """Minibatches of aligned arrays, epoch after epoch, forever.

    Each epoch visits every sample once, in a new order drawn from the batcher's own generator
    (or in order without shuffle). The last batch of an epoch is smaller when batch_size does not
    divide the data, or dropped with drop_last; a batch_size larger than the data gives one batch
    of everything per epoch (a DataError with drop_last, which would drop everything).
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.n = common_length({k: v.shape for k, v in self.arrays.items()}, "batches")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size <= 0:
            raise DataError(f"batch_size must be a positive integer, not {batch_size!r}")
        if drop_last and batch_size > self.n:
            raise DataError(f"batch_size {batch_size} exceeds the {self.n} samples and drop_last would drop them all")
        self.batch_size = min(int(batch_size), self.n)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._rng = np.random.default_rng(seed)
        self._epoch = 0
        self._position = 0
        self._order = self._new_order()

    @property
    def epoch(self) -> int:
        """Epochs completed: it counts up as the last batch of an epoch is taken."""
        return self._epoch

    @property
    def position(self) -> int:
        """Samples of the current epoch already yielded."""
        return self._position

    @property
    def batches_per_epoch(self) -> int:
        return count_batches(self.n, self.batch_size, self.drop_last)

    def _new_order(self) -> np.ndarray:
        return self._rng.permutation(self.n) if self.shuffle else np.arange(self.n)

    def next_batch(self) -> dict[str, np.ndarray]:
        idx = self._order[self._position : self._position + self.batch_size]
        self._position += len(idx)
        remaining = self.n - self._position
        if remaining == 0 or (self.drop_last and remaining < self.batch_size):
            self._epoch += 1
            self._position = 0
            self._order = self._new_order()
        return {k: v[idx] for k, v in self.arrays.items()}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return self.next_batch()

    def state(self) -> dict[str, np.ndarray]:
        """Flat numpy arrays (np.savez-able without pickle) from which restore() continues exactly."""
        return {
            "epoch": np.array(self._epoch, dtype=np.int64),
            "position": np.array(self._position, dtype=np.int64),
            "permutation": self._order.astype(np.int64),
            "rng": rng_to_array(self._rng),
        }

    def check_state(self, state: Mapping[str, Any], where: str = "") -> None:
        """Raise DataError (naming the entry, under the prefix ``where``) unless state is one that
        state() of a batcher over this data could have written; changes nothing."""
        self._parse_state(state, where)

    def _parse_state(self, state: Mapping[str, Any], where: str) -> tuple[np.random.Generator, int, int, np.ndarray]:
        _required(state, ("epoch", "position", "permutation", "rng"), "batches")
        ckpt.unexpected(state, {"epoch", "position", "permutation", "rng"}, where, DataError)
        order = ckpt.integers(state, "permutation", where, low=None, error=DataError)
        if order.shape != (self.n,):
            raise DataError(
                f"the saved batch order ('{where}permutation') covers {order.size} samples, but the data has {self.n}"
            )
        if not np.array_equal(np.sort(order), np.arange(self.n)):
            raise DataError(f"entry '{where}permutation' is not a permutation of 0..{self.n - 1}")
        rng = rng_entry(state, "rng", where)
        epoch = ckpt.count(state, "epoch", where, error=DataError)
        # a position never rests at the end of an epoch (the epoch turns over there)
        position = ckpt.count(state, "position", where, high=self.n, error=DataError)
        return rng, epoch, position, order.astype(np.int64)

    def restore(self, state: Mapping[str, Any], where: str = "") -> None:
        """Continue from a state() (checked first: a bad one changes nothing)."""
        self._rng, self._epoch, self._position, self._order = self._parse_state(state, where)


class Noise:
    """Seeded noise batches, (batch_size, *shape): standard normal, or uniform on [-1, 1)."""

    KINDS = ("normal", "uniform")

    def __init__(self, kind: str, shape: tuple[int, ...] | int, seed: int = 0, dtype: Any = np.float64) -> None:
        if kind not in self.KINDS:
            raise DataError(
                f"unknown noise kind {kind!r}{did_you_mean_suffix(kind, self.KINDS)} (kinds: normal, uniform)"
            )
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if not all(isinstance(d, int | np.integer) and d > 0 for d in self.shape):
            raise DataError(f"noise shape must be positive integers, not {shape!r}")
        self.kind = kind
        self.dtype = np.dtype(dtype)
        self._rng = np.random.default_rng(seed)

    def sample(self, batch_size: int) -> np.ndarray:
        size = (batch_size, *self.shape)
        if self.kind == "normal":
            return self._rng.standard_normal(size).astype(self.dtype, copy=False)
        return (2.0 * self._rng.random(size) - 1.0).astype(self.dtype, copy=False)

    def state(self) -> dict[str, np.ndarray]:
        return {"rng": rng_to_array(self._rng)}

    def check_state(self, state: Mapping[str, Any], where: str = "") -> None:
        self._parse_state(state, where)

    def _parse_state(self, state: Mapping[str, Any], where: str) -> np.random.Generator:
        _required(state, ("rng",), "noise")
        ckpt.unexpected(state, {"rng"}, where, DataError)
        return rng_entry(state, "rng", where)

    def restore(self, state: Mapping[str, Any], where: str = "") -> None:
        self._rng = self._parse_state(state, where)
