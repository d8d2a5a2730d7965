"""What compiling a spec produces: the Graph with its named nodes, the modules, optimizers and
schedules, and per phase of the training schedule what each backward reaches (``Compiled``)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..graph import Graph
from ..node import NodeId
from ..optim.weights import WeightSchedule, weight_at
from ..spec import schema as S
from ..spec.expr import Outputs

if TYPE_CHECKING:
    from ..initfrom import InitEntry
    from ..plan import BackwardPlan


@dataclass
class ModuleInfo:
    name: str
    spec: S.ModuleSpec
    kind: str  # layers | cell | subgraph | copy
    call: Callable[..., NodeId | Outputs] | None = None  # Outputs: a subgraph with named outputs
    params: list[NodeId] = field(default_factory=list)
    states: list[NodeId] = field(default_factory=list)
    calls: int = 0
    outputs: dict[str, tuple[int | None, ...]] | None = None  # named outputs' shapes (at the first call)


@dataclass
class BackwardInfo:
    loss: str
    targets: list[NodeId]
    retain_graph: bool
    weight: float | WeightSchedule  # as declared: a number or a schedule of the iteration
    loss_node: NodeId  # the node differentiated: loss * weight_node when there is one, else the loss
    reached: list[NodeId] = field(default_factory=list)
    plan: BackwardPlan | None = None
    # A scalar input the trainer feeds before each run of the phase (Trainer._feed_weights):
    # weight_at(step), times 1/accumulate when the phase accumulates. None when the weight is the
    # constant 1 and the phase does not accumulate: loss_node is then the loss itself.
    weight_node: NodeId | None = None

    @property
    def weighted(self) -> bool:
        """Whether the declared weight is anything but the constant 1 (its loss is logged twice:
        raw and weighted)."""
        return isinstance(self.weight, WeightSchedule) or self.weight != 1.0

    def log_keys(self, phase: str) -> tuple[str, ...]:
        """Its loss's keys in a train row of ``phase``: ``PHASE/LOSS`` (the raw loss), then
        ``PHASE/LOSS:weighted`` (times the weight) when it is weighted."""
        raw = f"{phase}/{self.loss}"
        return (raw, f"{raw}:weighted") if self.weighted else (raw,)

    def weight_at(self, step: int) -> float:
        """The declared weight at iteration ``step`` (the trainer's step before the iteration runs)."""
        return weight_at(self.weight, step)

    def feed_weight(self, g: Graph, step: int, scale: float = 1.0) -> None:
        """Set the weight node (if any) to weight_at(step) * scale, a 0-d array of the graph's dtype:
        a constant weight multiplies exactly as the constant node it replaced did."""
        if self.weight_node is not None:
            g.set_value(self.weight_node, np.asarray(self.weight_at(step) * scale, dtype=g.dtype))


@dataclass
class PhaseInfo:
    name: str
    spec: S.PhaseSpec
    detach: list[NodeId]
    backward: list[BackwardInfo]
    step: list[str]
    cut: dict[str, list[str]] = field(default_factory=dict)  # detached node -> parameters it cuts off


@dataclass
class Compiled:
    spec: S.Spec
    graph: Graph
    inputs: dict[str, NodeId]
    names: dict[str, NodeId]  # every named node: inputs, nodes, losses, metrics
    losses: dict[str, NodeId]
    metrics: dict[str, NodeId]
    modules: dict[str, ModuleInfo]
    optimizers: dict[str, Any]
    schedules: dict[str, Any]
    optimizer_params: dict[str, list[NodeId]]
    phases: list[PhaseInfo]
    carries: dict[str, NodeId]  # input name -> node whose value it takes at the next step
    targets: dict[str, tuple[str, S.SyncSpec | None]]  # copy module -> (source, sync)
    base_dir: pathlib.Path
    records: dict[str, dict[str, NodeId]] = field(default_factory=dict)  # node -> its several outputs (z: enc(x))
    init: list[InitEntry] = field(default_factory=list)  # checkpoints to load modules from (initfrom.py)
    # where each named node of the spec is defined, "FILE:LINE:COL" (its key), for messages at run time
    defined_at: dict[str, str] = field(default_factory=dict)


def describe_params(compiled: Compiled, names: list[str]) -> str:
    """Parameter names grouped by module: 'D (4 tensors), G.0.weight'."""
    owner = {p.name: m for m, info in compiled.modules.items() for p in info.params}
    groups: dict[str, int] = {}
    loose: list[str] = []
    for n in names:
        if n in owner:
            groups[owner[n]] = groups.get(owner[n], 0) + 1
        else:
            loose.append(n)
    parts = [f"{m} ({k} tensor{'s' if k != 1 else ''})" for m, k in groups.items()] + loose
    return ", ".join(parts) if parts else "nothing"
