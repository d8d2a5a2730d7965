"""Running a compiled spec: the training schedule, evaluation under no_grad, and the state a
checkpoint holds so that a resumed run continues exactly as the uninterrupted one would have.

One iteration runs the phases active at the step, in order (onlytorch/iteration.py; which phases
and which batch each sees: onlytorch/phases.py). Each run of a phase: apply its detach set, clear
gradients if it says ``before``, then for each of its ``accumulate`` micro-batches set the inputs
(the batch, fresh noise), forward its losses and run its backward calls with their
``retain_graph`` flags; then step its optimizers and their schedules, clear gradients if it says
``after``, and restore the detach set. Target copies sync after the iteration. Windowed
inputs (truncated BPTT) advance one window per iteration; a new batch starts after the last
window, and carried inputs restart at zeros then."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from . import checkpoint as ckpt
from .compile import Compiled, PhaseInfo
from .data.batches import Batches, Noise, rng_entry, rng_from_array, rng_to_array
from .data.sources import (
    DataError,
    LoadContext,
    get_source,
    live_log_row,
    load_source,
    make_live,
    progress_stats,
    split,
)
from .errors import GraphError
from .iteration import Iterations
from .log_window import LogWindow
from .metrics_log import Record
from .nn import copy_parameters
from .node import NodeId
from .spec import schema as S
from .stopping import EarlyStopping
from .train_metrics import MetricPlan, scalar


class Diverged(GraphError):
    """A loss or gradient went NaN or infinite: names the step, the phase and the first bad node."""

    def __init__(self, message: str, step: int, phase: str, node: str) -> None:
        super().__init__(message)
        self.step, self.phase, self.node = step, phase, node


def load_data(compiled: Compiled) -> dict[str, dict[str, np.ndarray]]:
    """Every split's arrays (float fields in the graph's dtype)."""
    spec = compiled.spec.data
    if spec is None:
        return {}
    ctx = LoadContext(base_dir=compiled.base_dir, seed=compiled.spec.seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    holdout: dict[str, float] = {}
    for name in ("train", "val", "test"):
        src = getattr(spec, name)
        if src is None:
            continue
        if isinstance(src, S.SplitSpec):
            holdout[name] = src.fraction
        elif get_source(src.source).live:
            continue  # collected while training (see make_live)
        else:
            entry = src.model_dump(by_alias=True)
            out[name] = load_source(
                entry, LoadContext(base_dir=ctx.base_dir, seed=ctx.seed + {"train": 0, "val": 1, "test": 2}[name])
            )
    if holdout and "train" in out:
        parts = split(out["train"], holdout, seed=compiled.spec.seed)
        out.update(parts)
    dtype = compiled.graph.dtype
    return {
        k: {f: (a.astype(dtype) if a.dtype.kind == "f" else a.astype(np.int64)) for f, a in v.items()}
        for k, v in out.items()
    }


class Trainer(Iterations):
    """Runs a compiled spec. ``state()``/``restore()`` cover everything a resume needs."""

    def __init__(self, compiled: Compiled, data: dict[str, dict[str, np.ndarray]] | None = None) -> None:
        self.c = compiled
        self.g = compiled.graph
        self.spec = compiled.spec
        self.data = load_data(compiled) if data is None else data
        seed = self.spec.seed
        self.step = 0
        self.window = 0  # index of the next window of windowed inputs
        self.batch: dict[str, np.ndarray] = {}
        self.batch_size = self.spec.data.batch_size if self.spec.data else 1
        self.fields = {
            name: inp.from_.split(".", 1)[1]
            for name, inp in self.spec.inputs.items()
            if inp.from_ and not inp.from_.startswith("noise.")
        }
        self.windows = {name: inp.window for name, inp in self.spec.inputs.items() if inp.window}
        self.n_windows = self._n_windows()
        self.batches = (
            Batches(self.data["train"], self.batch_size, shuffle=self.spec.data.shuffle, seed=seed)
            if "train" in self.data and self.spec.data
            else None
        )
        self.live = make_live(compiled)
        self.noise = {
            name: Noise(inp.from_.split(".", 1)[1], tuple(inp.shape), seed=seed * 1000 + 17 + i, dtype=self.g.dtype)
            for i, (name, inp) in enumerate(self.spec.inputs.items())
            if inp.from_ and inp.from_.startswith("noise.")
        }
        self.carry: dict[str, np.ndarray | None] = dict.fromkeys(compiled.carries)
        self.last: dict[str, float] = {}
        self.grad_norms: dict[str, float] = {}
        self._eval_carry: dict[str, np.ndarray] = {}
        self.stopping = EarlyStopping.of(self.spec)  # train.early_stopping's counter (inactive without)
        self.log_window = LogWindow()  # the train row in the making (train.log_train: mean; onlytorch/log_window.py)
        # the last train row's losses and train metrics, with the steps it covers (first, last)
        self.last_row: tuple[int, int, dict[str, float]] | None = None
        # which phase computes which train metric in its training forward (log_train: mean only)
        self.metric_plan = (
            MetricPlan(compiled, [compiled.inputs[n] for n in (*self.fields, *self.noise, *self.carry)])
            if self.spec.train is not None and self.spec.train.log_train == "mean" and compiled.metrics
            else None
        )

    # -------------------------------------------------------------- feeding

    def _n_windows(self) -> int:
        counts = set()
        for name, w in self.windows.items():
            split_name, field = self.spec.inputs[name].from_.split(".", 1)  # type: ignore[union-attr]
            length = self.data[split_name][field].shape[1] if split_name in self.data else w
            counts.add(length // w)
        if len(counts) > 1:
            raise GraphError(
                f"windowed inputs split their sequences into different numbers of windows: {sorted(counts)}"
            )
        return counts.pop() if counts else 1

    def _set_batch(self, batch: dict[str, np.ndarray], window: int) -> int:
        n = 0
        for name, field in self.fields.items():
            arr = batch[field]
            w = self.windows.get(name)
            if w:
                arr = arr[:, window * w : (window + 1) * w]
            self.g.set_value(name, arr)
            n = len(arr)
        return n

    def _sample_noise(self, n: int) -> None:
        for name, noise in self.noise.items():
            self.g.set_value(name, noise.sample(n))

    def _set_carries(self, n: int) -> None:
        for name, value in self.carry.items():
            node = self.c.inputs[name]
            if value is None or len(value) != n:
                value = np.zeros((n, *node.shape[1:]), dtype=self.g.dtype)
            self.g.set_value(name, value)

    def _next_batch(self, new_iteration: bool = False) -> int:
        if self.live is not None:
            if new_iteration:
                self.live.begin_iteration()
            self.batch = self.live.next_batch()
            n = self._set_batch(self.batch, 0)
        elif self.batches is None:
            n = self.batch_size
        else:
            if self.window == 0 or not self.windows:
                self.batch = self.batches.next_batch()
                if self.windows:
                    self.carry = dict.fromkeys(self.carry)
            n = self._set_batch(self.batch, self.window)
        return n

    def _feed_weights(self, phase: PhaseInfo, scale: float = 1.0) -> None:
        """Feed the phase's weight nodes their weights at this iteration times ``scale`` (1/K when accumulating)."""
        for b in phase.backward:
            b.feed_weight(self.g, self.step, scale)

    # -------------------------------------------------------------- training

    def _diverged(self, phase: PhaseInfo, node: NodeId, what: str) -> None:
        first = self.g.first_nonfinite(node)
        origin = first.name if first is not None else node.name
        where = (
            f"the first node whose value went NaN/inf is {self._named(first)}"
            if first is not None
            else "every forward value is finite: it went NaN/inf in the backward pass"
        )
        raise Diverged(
            f"training diverged at step {self.step + 1}, phase {phase.name!r}: {what}; {where}",
            self.step + 1,
            phase.name,
            origin,
        )

    def _named(self, node: NodeId) -> str:
        """The node as the spec knows it: 'h' (FILE:LINE:COL), or for a part of a spec node (of a
        loss, or a layer of a module it calls) "the log (inside 'h') at FILE:LINE:COL (graph node
        log_11)": the internal name only as a detail."""
        at = self.c.defined_at
        if node.name in self.c.names:
            return f"{node.name!r}" + (f" ({at[node.name]})" if node.name in at else "")
        rec = self.g.record(node)
        owner = rec.spec_node if rec.spec_node in self.c.names else self._inside(node)
        if owner is None:
            return rec.describe()
        what = rec.op.name if rec.op is not None else rec.kind
        place = f" at {at[owner]}" if owner in at else ""
        return f"the {what} (inside {owner!r}){place} (graph node {rec.name})"

    def _inside(self, node: NodeId) -> str | None:
        """For a node no definition of the spec built (Graph.building): the first named node of the
        spec that is computed from it."""
        for name, named in sorted(self.c.names.items(), key=lambda kv: kv[1].index):
            if named.index > node.index and any(n.index == node.index for n in self.g.forward_order([named])):
                return name
        return None

    def _stash_carries(self) -> None:
        # forward_node, not get_node_value: the carried node (e.g. the RNN's last state) is usually
        # not an ancestor of the loss, so the loss's forward does not compute it. Called before
        # backward, while the values it needs are still held.
        for name, node in self.c.carries.items():
            self.carry[name] = np.array(self.g.forward_node(node), copy=True)

    def _sync_targets(self) -> None:
        for copy, (source, sync) in self.c.targets.items():
            if sync is None:
                continue
            src, dst = self.c.modules[source].params, self.c.modules[copy].params
            if sync.every is not None and self.step % sync.every == 0:
                copy_parameters(self.g, src, dst)
            elif sync.tau is not None:
                copy_parameters(self.g, src, dst, tau=sync.tau)

    def total_steps(self) -> int:
        t = self.spec.train
        if t is None:
            return 0
        if t.steps is not None:
            return t.steps
        per_epoch = self.batches.batches_per_epoch if self.batches is not None else 1
        return int(t.epochs or 0) * per_epoch * self.n_windows

    # -------------------------------------------------------------- evaluation

    def evaluate(self, split_name: str, names: list[str] | None = None) -> dict[str, float]:
        """Metrics (and losses) averaged over a split, under no_grad and eval mode; with a gym
        source, the returns of whole episodes instead (see episodes())."""
        if self.live is not None:
            return self.episodes()
        targets = self._eval_targets(names)
        if not targets:
            return {}
        arrays = self.data.get(split_name)
        if arrays is None and self.fields:
            raise GraphError(f"there is no {split_name!r} split to evaluate")
        sums = dict.fromkeys(targets, 0.0)
        count = 0
        noise = {
            name: Noise(n.kind, n.shape, seed=self.spec.seed + 99991, dtype=self.g.dtype)
            for name, n in self.noise.items()
        }
        with self.g.no_grad():
            for batch, n in self._eval_batches(arrays):
                for name, nz in noise.items():
                    self.g.set_value(name, nz.sample(n))
                for w in range(self.n_windows if self.windows else 1):
                    if batch:
                        self._set_batch(batch, w)
                    self._set_carries_eval(n, w)
                    vals = self.g.forward_node([targets[k] for k in targets])
                    self._stash_eval_carries()
                    for k, v in zip(targets, vals):
                        sums[k] += float(np.asarray(v).reshape(-1)[0]) * n
                    count += n
        return {k: s / count for k, s in sums.items()} if count else {}

    def episode_settings(self, n: int | None = None, policy: str | None = None) -> tuple[int, str]:
        """How many episodes an evaluation runs and with which policy: the given values, else
        the spec's eval.episodes and eval.policy, else 20 episodes of the greedy policy."""
        ev = self.spec.eval
        n = n or (ev.episodes if ev is not None and ev.episodes else 20)
        return n, policy or (ev.policy if ev is not None else "greedy")

    def episodes(self, n: int | None = None, policy: str | None = None) -> dict[str, float]:
        """Returns of whole episodes (see episode_settings) with the greedy or the sampled
        policy, under no_grad, on environments seeded apart from training's."""
        assert self.live is not None, "episodes() needs a gym training source"
        n, policy = self.episode_settings(n, policy)
        return self.live.episodes(n, seed=self.spec.seed + 1_000_003, greedy=policy == "greedy")

    def _eval_targets(self, names: list[str] | None) -> dict[str, NodeId]:
        every = {**self.c.metrics, **self.c.losses}
        if names is None:
            names = list(self.c.metrics) or list(self.c.losses)
        return {k: every[k] for k in names if k in every}

    def _eval_batches(self, arrays: dict[str, np.ndarray] | None) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        if arrays is None:
            yield {}, self.batch_size
            return
        length = len(next(iter(arrays.values())))
        size = max(self.batch_size, 256)
        for start in range(0, length, size):
            yield {k: v[start : start + size] for k, v in arrays.items()}, min(size, length - start)

    def _set_carries_eval(self, n: int, window: int) -> None:
        for name in self.carry:
            node = self.c.inputs[name]
            value = self._eval_carry.get(name) if window > 0 else None
            self.g.set_value(name, value if value is not None else np.zeros((n, *node.shape[1:]), dtype=self.g.dtype))

    def _stash_eval_carries(self) -> None:
        self._eval_carry = {
            name: np.array(self.g.forward_node(node), copy=True) for name, node in self.c.carries.items()
        }

    def sample(
        self, node: str, n: int, seed: int = 12345, inputs: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Values of a node computed from noise inputs (generated samples), under no_grad; a
        conditional generator's data inputs are fed ``inputs`` (n rows each, see
        onlytorch.evaluation.sample_conditions)."""
        noise = {name: Noise(nz.kind, nz.shape, seed=seed, dtype=self.g.dtype) for name, nz in self.noise.items()}
        with self.g.no_grad():
            for name, nz in noise.items():
                self.g.set_value(name, nz.sample(n))
            for name, value in (inputs or {}).items():
                self.g.set_value(name, value)
            return np.array(self.g.forward_node(node), copy=True)

    # -------------------------------------------------------------- state

    def state(self) -> dict[str, np.ndarray]:
        g = self.g
        out: dict[str, np.ndarray] = {"meta/step": np.array(self.step), "meta/window": np.array(self.window)}
        for p in g.parameters():
            out[f"param/{p.name}"] = g.require_value(p)
        for s in g.states():
            out[f"state/{s.name}"] = g.require_value(s)
        for name, opt in self.c.optimizers.items():
            for k, v in opt.state_dict().items():
                out[f"opt/{name}/{k}"] = v
        for name, sched in self.c.schedules.items():
            for k, v in sched.state_dict().items():
                out[f"sched/{name}/{k}"] = v
        out["rng/graph"] = rng_to_array(g.rng)
        if self.batches is not None:
            for k, v in self.batches.state().items():
                out[f"batches/{k}"] = v
            if self.batch:
                for k, v in self.batch.items():
                    out[f"batch/{k}"] = v
        for name, nz in self.noise.items():
            for k, v in nz.state().items():
                out[f"noise/{name}/{k}"] = v
        for name, value in self.carry.items():
            if value is not None:
                out[f"carry/{name}"] = value
        if self.live is not None:
            out.update({f"live/{k}": v for k, v in self.live.state().items()})
        out.update(self.stopping.state())
        out.update(self.log_window.state())
        return out

    # A checkpoint is checked whole before any of it is applied, so a bad one (another spec's, cut
    # short, edited, forged) is refused with the file and the entry named and leaves the trainer
    # as it was. Each part checks its own entries (check_state / check_state_dict); this class
    # checks its own (weights, step, window, carried values, the current batch) and that no entry
    # is left over.

    def restore_weights(self, state: Mapping[str, np.ndarray]) -> None:
        """Parameters and states from a checkpoint; refuses (CheckpointError naming the file and
        the entry) one that does not fit the spec: a parameter missing, extra, shaped differently,
        not a finite float array."""
        values = _as_checkpoint_error(state, lambda: self._check_weights(state))
        for node, value in values:
            self.g.set_value(node, value)

    def _check_weights(self, state: Mapping[str, np.ndarray]) -> list[tuple[NodeId, np.ndarray]]:
        g = self.g
        out: list[tuple[NodeId, np.ndarray]] = []
        for kind, nodes in (("param", g.parameters()), ("state", g.states())):
            what = "parameter" if kind == "param" else "state"
            for node in nodes:
                key = f"{kind}/{node.name}"
                if key not in state:
                    raise ckpt.CheckpointError(
                        f"the checkpoint has no {what} {node.name!r} (entry {key!r}): it was written for another spec"
                    )
                current = g.require_value(node)
                saved = ckpt.entry(state, key)
                if saved.shape != current.shape:
                    raise ckpt.CheckpointError(
                        f"entry {key!r}: {what} {node.name!r} has shape {current.shape} in the spec but {saved.shape} "
                        "in the checkpoint"
                    )
                ckpt.floats(state, key, what=f"{what} {node.name!r}")
                if kind == "state" and node.name.endswith("running_var") and (saved < 0).any():
                    # a batch norm's running variance: a negative one makes every evaluation NaN
                    raise ckpt.CheckpointError(
                        f"entry {key!r} holds {int((saved < 0).sum())} negative value(s): a running variance "
                        "is never negative (a damaged or edited checkpoint)"
                    )
                out.append((node, np.array(saved, dtype=current.dtype, copy=True)))
        known = {f"param/{p.name}" for p in g.parameters()} | {f"state/{s.name}" for s in g.states()}
        ckpt.unexpected(
            {k: v for k, v in state.items() if k.startswith(("param/", "state/"))},
            known,
            what=": the spec has no such parameter or state (the checkpoint was written for another spec)",
        )
        return out

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Everything state() saved: weights, optimizer and schedule states, RNG and data
        positions, carried values and the step. Everything is checked first (CheckpointError
        naming the file and the entry); a refused checkpoint changes nothing."""
        _as_checkpoint_error(state, lambda: self._check_state(state))
        self.restore_weights(state)
        g = self.g
        for name, opt in self.c.optimizers.items():
            opt.load_state_dict(ckpt.with_prefix(state, f"opt/{name}"))
        for name, sched in self.c.schedules.items():
            sched.load_state_dict(ckpt.with_prefix(state, f"sched/{name}"))
        g.rng = rng_from_array(state["rng/graph"])
        if self.batches is not None:
            self.batches.restore(ckpt.with_prefix(state, "batches"))
        self.batch = {k: np.array(v, copy=True) for k, v in ckpt.with_prefix(state, "batch").items()}
        for name, nz in self.noise.items():
            nz.restore(ckpt.with_prefix(state, f"noise/{name}"))
        self.carry = {
            name: (np.array(state[f"carry/{name}"], dtype=g.dtype) if f"carry/{name}" in state else None)
            for name in self.carry
        }
        if self.live is not None:
            self.live.restore(ckpt.with_prefix(state, "live"), "live/")
        self.stopping.restore(state)
        self.log_window = LogWindow()
        if self.spec.train is not None and self.spec.train.log_train == "mean":
            self.log_window.restore(state)
        self.step = int(state["meta/step"])
        self.window = int(state["meta/window"])

    def _check_state(self, state: Mapping[str, np.ndarray]) -> None:
        # meta/ holds the run's notes about the checkpoint (spec_hash, ...): nothing is restored from
        # them but step and window, so another note is no reason to refuse a checkpoint
        known = {"rng/graph"} | {k for k in state if k.startswith("meta/")}
        known |= {k for k in state if k.startswith(("param/", "state/"))}  # _check_weights' part
        self._check_weights(state)
        # a step count past 2**53 is no run's (and would not survive run.json's JSON exactly)
        if ckpt.count(state, "meta/step") >= 2**53:
            raise ckpt.CheckpointError(
                f"entry 'meta/step' is {int(state['meta/step'])}; no run has 2**53 steps or more"
            )
        ckpt.count(state, "meta/window", high=self.n_windows if self.windows else 1)
        if "meta/spec_hash" in state:
            ckpt.text(state, "meta/spec_hash")
        rng_entry(state, "rng/graph", error=ckpt.CheckpointError)
        for prefix, parts in (("opt", self.c.optimizers), ("sched", self.c.schedules)):
            for name, part in parts.items():
                where = f"{prefix}/{name}/"
                lead = f"{'optimizer' if prefix == 'opt' else 'the schedule of optimizer'} {name!r}: "
                part.check_state_dict(ckpt.with_prefix(state, where[:-1]), where, lead)
                known |= {k for k in state if k.startswith(where)}
        if self.batches is not None:
            self.batches.check_state(ckpt.with_prefix(state, "batches"), "batches/")
            known |= {k for k in state if k.startswith("batches/")}
            known |= self._check_batch(state)
        for name, nz in self.noise.items():
            nz.check_state(ckpt.with_prefix(state, f"noise/{name}"), f"noise/{name}/")
            known |= {k for k in state if k.startswith(f"noise/{name}/")}
        for name in self.carry:
            key = f"carry/{name}"
            if key in state:
                shape = self.c.inputs[name].shape
                value = ckpt.floats(state, key, what=f"the value carried into input {name!r}")
                if value.ndim != len(shape) or tuple(value.shape[1:]) != tuple(shape[1:]) or not len(value):
                    raise ckpt.CheckpointError(
                        f"entry {key!r} is {ckpt.describe(value)}; input {name!r} has shape {_fmt(shape)}"
                    )
                known.add(key)
        if self.live is not None:
            self.live.check_state(ckpt.with_prefix(state, "live"), "live/")
            known |= {k for k in state if k.startswith("live/")}
        known |= self.stopping.check_state(state)
        known |= LogWindow.check_state(state, self._logged_names())
        ckpt.unexpected(
            state, known, what=": no part of the spec wrote it (the checkpoint was written for another spec)"
        )

    def _logged_names(self) -> set[str]:
        """The keys of the losses and train metrics a train row of this spec can hold."""
        names = {f"train/{m}" for m in self.c.metrics}
        for phase in self.c.phases:
            for b in phase.backward:
                names.update(b.log_keys(phase.name))
        return names

    def train_metrics(self, names: Iterable[str] | None = None) -> dict[str, float]:
        """The spec's metrics (``train/NAME``; all, or those named) on the batch of the iteration just
        run, after its optimizer steps, under no_grad and eval mode (no random number drawn, nothing
        trained): what ``log_train: last`` logs, and ``mean`` for a metric no phase of the iteration
        computes in its training forward (onlytorch/train_metrics.py)."""
        metrics = self.c.metrics
        with self.g.no_grad():
            return {
                f"train/{name}": scalar(self.g.forward_node(metrics[name]))
                for name in (metrics if names is None else names)
            }

    def _check_batch(self, state: Mapping[str, np.ndarray]) -> set[str]:
        """The current batch (kept for windowed inputs): every field of the training data or none,
        each shaped like the data's rows; required while a batch is half-way through its windows."""
        batch = ckpt.with_prefix(state, "batch")
        train = self.data["train"]
        if not batch:
            if self.windows and int(state["meta/window"]) != 0:
                raise ckpt.CheckpointError(
                    f"entry 'batch/{next(iter(train))}' is missing: the checkpoint stopped half-way through a "
                    "batch's windows and must hold that batch"
                )
            return set()
        ckpt.unexpected(batch, set(train), "batch/", what=": the training data has no such field")
        rows = None
        for field, data in train.items():
            value = ckpt.entry(batch, field, "batch/")
            same_kind = (value.dtype.kind == "f") == (data.dtype.kind == "f") and value.dtype.kind in "fiu"
            if not same_kind or value.shape[1:] != data.shape[1:] or value.ndim != data.ndim:
                raise ckpt.CheckpointError(
                    f"entry 'batch/{field}' is {ckpt.describe(value)}; the training field {field!r} has "
                    f"{data.dtype.name} rows of shape {data.shape[1:]}"
                )
            if data.dtype.kind == "f":
                ckpt.floats(batch, field, "batch/")
            if (rows is not None and len(value) != rows) or not 0 < len(value) <= self.batch_size:
                raise ckpt.CheckpointError(
                    f"entry 'batch/{field}' has {len(value)} rows; a batch has 1 to {self.batch_size}, "
                    "the same for every field"
                )
            rows = len(value)
        return {f"batch/{k}" for k in batch}


def _as_checkpoint_error(state: Mapping[str, np.ndarray], check: Callable[[], Any]) -> Any:
    """check()'s result; its GraphError or DataError as a CheckpointError that names the file."""
    source = getattr(state, "path", None) or "the checkpoint"
    try:
        return check()
    except (GraphError, DataError) as e:
        raise ckpt.CheckpointError(f"{source}: {e}") from None


def _fmt(shape: Any) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def train_loop(
    trainer: Trainer,
    steps: int,
    on_log: Callable[[Record], None],
    on_eval: Callable[[Record], None] | None = None,
    on_checkpoint: Callable[[], None] | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Run iterations until ``steps`` in total, logging, evaluating and checkpointing as the spec says,
    or until an evaluation ends the run early (``train.early_stopping``: see onlytorch/stopping.py).

    ``should_stop`` is asked between iterations (never inside one): when it returns True the loop
    raises KeyboardInterrupt with the trainer at an iteration boundary, so a checkpoint written
    then is one that a resume continues from exactly."""
    t = trainer.spec.train
    assert t is not None
    window = trainer.log_window if t.log_train == "mean" else None
    start = time.perf_counter()
    while trainer.step < steps and not trainer.stopping.has_stopped:
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt
        values = trainer.run_iteration()
        step = trainer.step
        if window is not None and values:  # an iteration where no phase ran (phases over time) adds nothing
            window.add(values, step=step)
            # each metric weighs the rows of the batch(es) it was computed on (a remainder batch less):
            # in the training forward of a phase where it is cheap (onlytorch/train_metrics.py), else after
            for measured, rows in trainer.measured:
                window.add(measured, rows)
            if trainer.unmeasured:
                window.add(trainer.train_metrics(trainer.unmeasured), trainer.batch_rows())
        if progress is not None:
            if trainer.live is not None:
                # what an RL user watches beside the losses (a gym source: the training episodes' return)
                shown = progress_stats(trainer.spec, trainer.live.stats())
                progress(step, {**values, **shown} if shown else values)
            else:
                progress(step, values)
        if step % t.log_every == 0 or step == steps:
            # train.log_train: the window's means, or the last iteration's values and its batch's metrics
            since = window.since if window is not None else None
            row = window.take() if window is not None else {**values, **(trainer.train_metrics() if values else {})}
            trainer.last_row = (since or step, step, dict(row))
            if trainer.live is not None:
                row.update(live_log_row(trainer.live.stats()))
            for o, opt in trainer.c.optimizers.items():
                row[f"lr/{o}"] = float(opt.lr)
                if o in trainer.grad_norms:
                    row[f"grad_norm/{o}"] = trainer.grad_norms[o]
            row["time"] = time.perf_counter() - start
            on_log(Record(step, row))
        if on_eval is not None and t.eval_every and (step % t.eval_every == 0 or step == steps):
            on_eval(Record(step, {}))
        if on_checkpoint is not None and t.checkpoint_every and step % t.checkpoint_every == 0:
            on_checkpoint()


__all__ = ["DataError", "Diverged", "Record", "Trainer", "load_data", "train_loop"]
