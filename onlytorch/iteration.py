"""One training iteration of a Trainer (onlytorch/train.py): the phases active at the step and the
batch each sees (the rules: onlytorch/phases.py), each run's micro-batches (``accumulate``), backward
calls and optimizer steps. Trainer inherits it; kept in its own module so that the class stays
readable."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from . import phases
from .train_metrics import loss_targets, scalar

if TYPE_CHECKING:
    from .compile import Compiled, PhaseInfo
    from .graph import Graph
    from .node import NodeId
    from .train_metrics import Measure, MetricPlan


class Iterations:
    """The iteration part of Trainer. The names declared for type checking below are Trainer's."""

    _drawn: int | None = None  # rows of the batch in use, once a phase of this iteration has drawn one
    _run: tuple[str, int] = ("new", 0)  # the current run's batch mode and its index among the phase's runs
    _measure: Measure | None = None  # the train metrics the current run computes in its forward
    # train.log_train: mean: the metrics the last iteration computed in its training forwards, one
    # ({train/NAME: value}, rows) per phase that did, and the ones no phase of it covered
    # (Trainer.train_metrics computes those after it)
    measured: tuple[tuple[dict[str, float], float], ...] = ()
    unmeasured: tuple[str, ...] = ()

    if TYPE_CHECKING:
        c: Compiled
        g: Graph
        step: int
        batch_size: int
        window: int
        n_windows: int
        windows: dict[str, int]
        live: Any
        batches: Any
        metric_plan: MetricPlan | None
        last: dict[str, float]
        grad_norms: dict[str, float]

        def _next_batch(self, new_iteration: bool = False) -> int: ...
        def _sample_noise(self, n: int) -> None: ...
        def _set_carries(self, n: int) -> None: ...
        def _feed_weights(self, phase: PhaseInfo, scale: float = 1.0) -> None: ...
        def _stash_carries(self) -> None: ...
        def _sync_targets(self) -> None: ...
        def _diverged(self, phase: PhaseInfo, node: NodeId, what: str) -> None: ...

    def run_iteration(self) -> dict[str, float]:
        """One iteration of the schedule: the phases active at this step, in order (which, and the
        batch each sees: onlytorch/phases.py); returns the losses it computed (by phase)."""
        values: dict[str, float] = {}
        self._drawn = None
        active = tuple(i for i, phase in enumerate(self.c.phases) if phases.active(phase.spec, self.step))
        plan = self.metric_plan
        measures, self.unmeasured = plan.assign(active) if plan is not None else ({}, ())
        measured: list[tuple[dict[str, float], float]] = []
        for index in active:
            phase = self.c.phases[index]
            runs = self._repeats(phase)
            for r in range(runs):
                self._run = (phases.batch_mode(phase.spec, index), r)
                # the phase's metrics on its last run: the last batch it sees
                self._measure = measures.get(index) if r == runs - 1 else None
                values.update(self._run_phase(phase))
            measure = measures.get(index)
            if measure is not None and runs:
                measured.append((measure.values(), measure.rows))
            elif measure is not None:  # a phase with no run this time (epochs of no minibatch)
                self.unmeasured += measure.names
        self._measure = None
        self.measured = tuple(measured)
        if self.windows:
            self.window = (self.window + 1) % self.n_windows
        self.step += 1
        self._sync_targets()
        self.last = values
        return values

    def batch_rows(self) -> float:
        """The rows of the batch in use (a remainder batch has fewer): what a train metric weighs."""
        return float(self._drawn or self.batch_size)

    def _feed(self, k: int) -> None:
        """Set the inputs of micro-batch ``k`` of the current run: the batch (the first micro-batch of
        a phase's first run follows its ``batch``; every later one draws; the iteration's first draw
        starts a live source's iteration), fresh noise, the carried values."""
        mode, run = self._run
        fresh = run > 0 or k > 0 or mode == "new"
        # windowed inputs: every run of the iteration sees the iteration's window
        if self._drawn is None or (fresh and not self.windows):
            self._drawn = self._next_batch(new_iteration=self._drawn is None)
        self._sample_noise(self._drawn)
        self._set_carries(self._drawn)

    def _repeats(self, phase: PhaseInfo) -> int:
        """A phase's runs per iteration: its repeat, or one per minibatch for its epochs."""
        if phase.spec.epochs is None:
            return phase.spec.repeat
        if self.live is not None:
            per_epoch = self.live.batches_per_epoch
        else:
            per_epoch = self.batches.batches_per_epoch if self.batches is not None else 1
        return phase.spec.epochs * per_epoch

    def _run_phase(self, phase: PhaseInfo) -> dict[str, float]:
        """One run of a phase: ``accumulate`` micro-batches (``_feed`` sets the inputs of each), each
        a forward and the backward calls with the loss scaled by 1/accumulate, then the steps. The
        logged loss is the mean over the micro-batches."""
        g = self.g
        micro = phase.spec.accumulate
        self._feed_weights(phase, 1.0 / micro)
        for d in phase.detach:
            g.detach_node(d)
        try:
            if phase.spec.zero_grad == "before":
                g.clear_jacobi()
            out: dict[str, float] = {}
            if self._measure is not None:
                self._measure.start()
            for k in range(micro):
                self._feed(k)
                for key, value in self._forward_backward(phase).items():
                    out[key] = out.get(key, 0.0) + value
            if micro > 1:
                out = {key: value / micro for key, value in out.items()}
            for o in phase.step:
                opt = self.c.optimizers[o]
                norm = _grad_norm(g, opt.params)
                if not math.isfinite(norm):
                    bad = next(p for p in opt.params if not np.isfinite(_grad_or_zero(g, p)).all())
                    self._diverged(phase, bad, f"the gradient of parameter {bad.name!r} is not finite")
                self.grad_norms[o] = norm
                opt.step()
                sched = self.c.schedules.get(o)
                if sched is not None:
                    sched.step()
            if phase.spec.zero_grad == "after":
                g.clear_jacobi()
            return out
        finally:
            for d in phase.detach:
                g.attach_node(d)

    def _forward_backward(self, phase: PhaseInfo) -> dict[str, float]:
        """One micro-batch of a phase: its raw losses (and, for a weighted backward, the loss times its
        weight at this step, as logged) and their gradients, through the weighted loss nodes."""
        g = self.g
        # the nodes differentiated (loss * weight node, where there is one), the losses as defined,
        # and the train metrics this run computes (onlytorch/train_metrics.py): one forward
        measure = self._measure
        if measure is not None:
            vals = g.forward_node(measure.forward)
            measure.add(vals, self.batch_rows())
        else:
            vals = g.forward_node(loss_targets(phase, self.c.losses))
        out = {}
        for b, v, r in zip(phase.backward, vals, vals[len(phase.backward) :]):
            value, scaled = scalar(r), scalar(v)
            if not math.isfinite(value):
                self._diverged(phase, b.loss_node, f"loss {b.loss!r} is {value}")
            if not math.isfinite(scaled):
                self._diverged(phase, b.loss_node, f"loss {b.loss!r} times its weight is {scaled}")
            raw, *weighted = b.log_keys(phase.name)
            out[raw] = value  # the raw loss; a weighted one is logged beside it
            if weighted:
                out[weighted[0]] = value * b.weight_at(self.step)
        self._stash_carries()
        for b in phase.backward:
            g.backward_nodes_ex(b.targets, b.loss_node, retain_graph=b.retain_graph)
        return out


def _grad_or_zero(g: Any, p: NodeId) -> np.ndarray:
    grad = g.get_node_grad(p)
    return np.zeros(()) if grad is None else grad


def _grad_norm(g: Any, params: Any) -> float:
    """The global 2-norm of params' gradients: logged as grad_norm/<optimizer>, and not finite
    exactly when some gradient is not (the divergence check before every optimizer step). Each
    gradient's sum of squares is one BLAS dot in its own dtype; only when that is not finite is
    it summed again in float64, so a large but finite float32 gradient never counts as diverged."""
    total = 0.0
    for p in params:
        gr = g.get_node_grad(p)
        if gr is not None:
            sq = float(np.vdot(gr, gr))
            if not math.isfinite(sq):
                sq = float(np.sum(np.square(gr, dtype=np.float64)))
            total += sq
    return math.sqrt(total)
