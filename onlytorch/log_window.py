"""The logging window: what a train row of metrics.jsonl holds for each loss and each train metric.

With ``train.log_train: mean`` (the default) a train row holds, for each loss, the mean of its
per-iteration values over the iterations since the previous train row (the iterations whose
phases computed it), and for each train metric the mean over the samples those iterations'
batches held: a metric is computed on each iteration's last batch (on the training forward, as
Keras does: onlytorch/train_metrics.py) and weighs that batch's rows, so a 9-sample remainder
batch of a 64-sample window weighs 9/64. ``log_train: last`` logs the last
iteration's values instead (the last batch's metrics).

The window that is open when a checkpoint is written is part of it (entries ``logwin/...``, with
the step of its first value, written only while the window holds something), so a resumed run logs the rows the uninterrupted
run would have; a checkpoint without them (written by an older onlytorch, or at a row's step)
resumes with an empty window.

Means are kept as running means (mean += (value - mean) * weight / total), not as sums: a window
of one value, or of equal values, logs that value exactly."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from . import checkpoint as ckpt

PREFIX = "logwin"
_NAMES, _MEANS, _WEIGHTS, _SINCE = "names", "means", "weights", "since"


class LogWindow:
    """Running means of named values since the last ``take()``, each with its own total weight."""

    def __init__(self) -> None:
        self.means: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        # the step of the first value folded in, when add() was told it (the trainer's window: the
        # steps a row averages, "mean of steps 351-400")
        self.since: int | None = None

    def __bool__(self) -> bool:
        return bool(self.means)

    def add(self, values: Mapping[str, float], weight: float = 1.0, step: int | None = None) -> None:
        """Fold ``values`` in, each weighing ``weight`` (1 for an iteration's loss, the batch's rows
        for a metric); ``step``: the step they are of (the window's first one is kept in ``since``)."""
        means, weights = self.means, self.weights
        if not means and step is not None:
            self.since = step
        for key, value in values.items():
            total = weights.get(key, 0.0) + weight
            mean = means.get(key, 0.0)
            means[key] = mean + (value - mean) * (weight / total)
            weights[key] = total

    def take(self) -> dict[str, float]:
        """The window's means (in the order the values first came), and a new, empty window."""
        out = self.means
        self.means, self.weights, self.since = {}, {}, None
        return out

    # ---------------------------------------------------------------- checkpoint

    def state(self) -> dict[str, np.ndarray]:
        """The open window as checkpoint entries; none when it is empty."""
        if not self.means:
            return {}
        out = {
            f"{PREFIX}/{_NAMES}": np.array(list(self.means), dtype=str),
            f"{PREFIX}/{_MEANS}": np.array(list(self.means.values()), dtype=np.float64),
            f"{PREFIX}/{_WEIGHTS}": np.array([self.weights[k] for k in self.means], dtype=np.float64),
        }
        if self.since is not None:
            out[f"{PREFIX}/{_SINCE}"] = np.array(self.since, dtype=np.int64)
        return out

    @staticmethod
    def check_state(state: Mapping[str, np.ndarray], known_names: Iterable[str]) -> set[str]:
        """The window's entries of a checkpoint, checked (CheckpointError naming the entry): all
        three (and optionally the window's first step) or none, names the spec logs, finite means,
        positive weights, one of each per name."""
        mine = ckpt.with_prefix(state, PREFIX)
        if not mine:
            return set()
        where = f"{PREFIX}/"
        ckpt.unexpected(mine, {_NAMES, _MEANS, _WEIGHTS, _SINCE}, where, what=": no part of the log window wrote it")
        if _SINCE in mine:  # optional: a window written before it was kept
            since = mine[_SINCE]
            if since.shape != () or since.dtype.kind not in "iu" or int(since) < 1:
                raise ckpt.CheckpointError(f"entry '{where}{_SINCE}' is {ckpt.describe(since)}, not a step (1 or more)")
        names = ckpt.entry(mine, _NAMES, where)
        if names.ndim != 1 or names.dtype.kind != "U" or not len(names):
            raise ckpt.CheckpointError(f"entry '{where}{_NAMES}' is {ckpt.describe(names)}, not a list of names")
        shape = names.shape
        ckpt.floats(mine, _MEANS, where, shape=shape, what="the window's means")
        weights = ckpt.floats(mine, _WEIGHTS, where, shape=shape, what="the window's weights")
        if (weights <= 0).any():
            raise ckpt.CheckpointError(f"entry '{where}{_WEIGHTS}' holds a weight that is not positive")
        listed = [str(n) for n in names]
        if len(set(listed)) != len(listed):
            raise ckpt.CheckpointError(f"entry '{where}{_NAMES}' names a value twice")
        known = set(known_names)
        stray = [n for n in listed if n not in known]
        if stray:
            raise ckpt.CheckpointError(
                f"entry '{where}{_NAMES}' names {stray[0]!r}, which the spec does not log (the checkpoint was "
                "written for another spec)"
            )
        return {f"{where}{k}" for k in mine}

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """The window a checkpoint holds (checked first with check_state); empty without one."""
        mine = ckpt.with_prefix(state, PREFIX)
        self.since = int(mine[_SINCE]) if _SINCE in mine else None
        if not mine:
            self.means, self.weights = {}, {}
            return
        names = [str(n) for n in mine[_NAMES]]
        self.means = dict(zip(names, (float(v) for v in mine[_MEANS])))
        self.weights = dict(zip(names, (float(v) for v in mine[_WEIGHTS])))


__all__ = ["PREFIX", "LogWindow"]
