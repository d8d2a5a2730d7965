"""The engine's run-time state, with one owner: the Runtime of a Graph.

It holds what running a graph changes, as opposed to the graph's structure: the clock whose ticks
version values, the pass id of the latest executor run, the bytes of the arrays the graph holds
(values and gradients) and their peak, the train and gradient-tracking modes, the anomaly flag,
the random generators (``init_rng`` initialises parameters, ``rng`` feeds dropout and sampling)
and the nodes that may hold an accumulated gradient. The operations on that state are its methods:
storing a leaf's value, accounting bytes, releasing or dropping values, marking values changed in
place, adding gradients into their targets and clearing them.

The executor's loops and codegen's straight-line code keep the clock, byte count and peak in
locals while they run and write them back here at the end (see executor.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from .executor import accumulate as _accumulate

if TYPE_CHECKING:
    from .node import Node


class Runtime:
    """The run-time state of one Graph (see the module docstring). Its fields are read and written
    by the engine core (graph, autograd, executor, codegen, plan); other code uses Graph's public
    methods, or ``mark_changed`` after changing leaves' values in place."""

    __slots__ = ("anomaly", "clock", "grad_enabled", "graded", "init_rng", "nbytes", "pass_id", "peak", "rng", "train")

    def __init__(self, seed: int | None) -> None:
        init_seq, run_seq = np.random.SeedSequence(seed).spawn(2)
        self.init_rng = np.random.default_rng(init_seq)
        self.rng = np.random.default_rng(run_seq)
        self.grad_enabled = True
        self.train = True
        self.anomaly = False
        self.clock = 0  # a tick per value set: a node's ``ver`` is the tick of its value
        self.pass_id = 0  # of the latest executor run: its no_grad drops touch only what it computed
        self.nbytes = 0
        self.peak = 0
        self.graded: dict[int, Node] = {}  # the nodes that may hold an accumulated gradient

    # ------------------------------------------------------------ values and bytes

    def store(self, node: Node, arr: np.ndarray) -> None:
        """Give leaf node the value arr (a new version), counting its bytes."""
        old = node.value
        node.value = arr
        node.rshape = arr.shape
        self.clock += 1
        node.ver = self.clock
        node.tracked = True
        node.released_by = None
        self.account(arr.nbytes - (old.nbytes if old is not None else 0))

    def account(self, delta: int) -> None:
        """delta more bytes held (or fewer, when negative); the peak follows."""
        self.nbytes += delta
        if self.nbytes > self.peak:
            self.peak = self.nbytes

    def mark_changed(self, *nodes: Node) -> None:
        """Leaves' values were changed in place (an optimizer step): one new tick for all of them."""
        self.clock += 1
        for node in nodes:
            node.ver = self.clock

    def release(self, nodes: Iterable[Node], by: str) -> None:
        """Drop the values of nodes; ``by`` says who did it, for the error a later backward raises."""
        freed = 0
        for n in nodes:
            if n.value is not None:
                freed += n.value.nbytes
                n.value = None
                n.released_by = by
        self.nbytes -= freed

    def drop(self, nodes: Iterable[Node]) -> None:
        """Drop the values of nodes that no caller can ask for (a backward's gradient nodes)."""
        freed = 0
        for n in nodes:
            if n.value is not None:
                freed += n.value.nbytes
                n.value = None
        self.nbytes -= freed

    def memory_stats(self) -> dict[str, int]:
        return {"current_bytes": self.nbytes, "peak_bytes": self.peak}

    # ------------------------------------------------------------ gradients

    # Adds the gradients of a backward into its targets' (see executor.accumulate): written once,
    # as the source template codegen's straight-line backward code also fills in.
    accumulate = _accumulate

    def clear_grads(self, nodes: Iterable[Node] | None = None) -> None:
        """Drop the accumulated gradients of nodes (of every node when None)."""
        graded = self.graded
        freed = 0
        if nodes is None:
            for n in graded.values():
                if n.grad is not None:
                    freed += n.grad.nbytes
                    n.grad = None
            graded.clear()
            self.nbytes -= freed
            return
        for n in nodes:
            if n.grad is not None:
                freed += n.grad.nbytes
                n.grad = None
            graded.pop(n.index, None)
        self.nbytes -= freed
