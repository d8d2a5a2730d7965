"""Train metrics on the training forward (``train.log_train: mean``), as Keras computes them: each
metric is computed in the forward a phase already runs for its losses (train mode, the batch of each
micro-batch, before backward and the optimizer step), where that costs only the metric's own nodes.

The rule, decided once per phase when the trainer is made: a phase *covers* a metric when every node
the metric depends on that the phase's loss forward does not compute anyway is

- cheap: no matrix product (the products threads.py counts) and no read of a parameter, so a metric
  that would run (part of) a network the phase's losses do not run is not covered;
- harmless: draws no random number (dropout, sampling) and writes no state (batch norm's running
  statistics), so that computing it changes nothing the training would otherwise do;
- fed: an input among it is one the phase feeds (a data field, noise, a carried value, the phase's
  own loss weights), never one that holds another phase's value or none.

In an iteration each metric is computed by the last active phase that covers it, on that phase's
last run (``repeat``, ``epochs``): the iteration's last batch where that phase is the last to run,
as the value always was. Over the ``accumulate`` micro-batches of that run the value is the mean
weighted by each micro-batch's rows. A metric no active phase covers is computed as before, after
the iteration's steps under no_grad and eval mode (Trainer.train_metrics): only those pay a forward.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .threads import product_flops

if TYPE_CHECKING:
    from .compile import Compiled, PhaseInfo
    from .node import Node, NodeId


def loss_targets(phase: PhaseInfo, losses: dict[str, NodeId]) -> list[NodeId]:
    """What a phase's training forward computes for its losses: the differentiated nodes (loss times
    its weight, where weighted), then the losses as defined (Iterations._forward_backward)."""
    return [b.loss_node for b in phase.backward] + [losses[b.loss] for b in phase.backward]


def covers(compiled: Compiled, phase: PhaseInfo, fed: Iterable[NodeId]) -> tuple[str, ...]:
    """The metrics (names, in the spec's order) ``phase`` computes in its training forward for the
    cost of their own nodes (the module docstring's rule); ``fed``: the inputs every phase feeds."""
    g = compiled.graph
    computed = {n.index for n in g.ancestors(loss_targets(phase, compiled.losses))}
    feeds = {n.index for n in fed} | {b.weight_node.index for b in phase.backward if b.weight_node is not None}
    out = []
    for name, node in compiled.metrics.items():
        extra = [n for n in g.ancestors([node]) if n.index not in computed]
        if all(_cheap_and_harmless(n, feeds) for n in extra) and product_flops(extra, 1) == 0:
            out.append(name)
    return tuple(out)


def _cheap_and_harmless(n: Node, feeds: set[int]) -> bool:
    """Whether a node may be added to a training forward: an input the phase feeds, another leaf,
    or an op that draws no random number, writes no state and reads no parameter."""
    if n.op is None:
        return n.kind != "input" or n.index in feeds
    return not n.op.random and not n.op.writes and not any(p.kind == "parameter" for p in n.inputs)


class MetricPlan:
    """Which phase computes which metric in each iteration (the module docstring's rule): the phases'
    covers decided once, the assignment cached per combination of active phases."""

    def __init__(self, compiled: Compiled, fed: Sequence[NodeId]) -> None:
        self.metrics = compiled.metrics
        self.phases = compiled.phases
        self.losses = compiled.losses
        self.covers = [covers(compiled, phase, fed) for phase in compiled.phases]
        self._assigned: dict[tuple[int, ...], tuple[dict[int, Measure], tuple[str, ...]]] = {}

    def assign(self, active: tuple[int, ...]) -> tuple[dict[int, Measure], tuple[str, ...]]:
        """For the active phases (indices, in order): what each measures on its last run, and the
        metrics none covers (computed after the iteration)."""
        got = self._assigned.get(active)
        if got is None:
            owner: dict[str, int] = {}
            for index in active:
                for name in self.covers[index]:
                    owner[name] = index  # a later phase that covers it wins
            by_phase: dict[int, Measure] = {}
            for index in active:
                names = tuple(n for n in self.metrics if owner.get(n) == index)
                if names:
                    losses = loss_targets(self.phases[index], self.losses)
                    by_phase[index] = Measure(names, losses, [self.metrics[n] for n in names])
            rest = tuple(n for n in self.metrics if n not in owner)
            got = self._assigned[active] = (by_phase, rest)
        return got


class Measure:
    """The metrics one phase run computes in its training forward (``forward``: the phase's loss
    targets, then the metrics' nodes from position ``first``), and their row-weighted means over the
    run's micro-batches so far."""

    __slots__ = ("first", "forward", "keys", "means", "names", "rows")

    def __init__(self, names: tuple[str, ...], losses: list[NodeId], nodes: list[NodeId]) -> None:
        self.names = names
        self.keys = tuple(f"train/{n}" for n in names)
        self.forward = losses + nodes
        self.first = len(losses)
        self.means: list[float] = []
        self.rows = 0.0

    def start(self) -> None:
        self.rows = 0.0

    def add(self, values: Any, rows: float) -> None:
        """One micro-batch's forward values (``forward``'s), its metrics weighing its rows (a running
        mean: one micro-batch's value is kept exactly)."""
        got = [scalar(v) for v in values[self.first :]]
        if not self.rows:  # the first (usually the only) micro-batch
            self.means, self.rows = got, rows
            return
        self.rows += rows
        share = rows / self.rows
        self.means = [m + (v - m) * share for m, v in zip(self.means, got)]

    def values(self) -> dict[str, float]:
        """The run's metrics, by log key (``train/NAME``)."""
        return dict(zip(self.keys, self.means))


def scalar(value: Any) -> float:
    """A metric node's value (a 0-d array, or a size-1 one) as a float: float() alone for 0-d, five
    times cheaper than going through an element."""
    return float(value) if type(value) is not np.ndarray or value.ndim == 0 else float(value.reshape(-1)[0])


__all__ = ["Measure", "MetricPlan", "covers", "loss_targets", "scalar"]
