"""What compiling a spec produces: the Graph with its named nodes, the modules, optimizers and
schedules, and per phase of the training schedule what each backward reaches (``Compiled``)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..graph import Graph
from ..node import NodeId
from ..spec import schema as S

if TYPE_CHECKING:
    from ..plan import BackwardPlan


@dataclass
class ModuleInfo:
    name: str
    spec: S.ModuleSpec
    kind: str  # layers | cell | subgraph | copy
    call: Callable[..., NodeId] | None = None
    params: list[NodeId] = field(default_factory=list)
    states: list[NodeId] = field(default_factory=list)
    calls: int = 0


@dataclass
class BackwardInfo:
    loss: str
    targets: list[NodeId]
    retain_graph: bool
    weight: float
    loss_node: NodeId  # the node differentiated (weight * loss when weight != 1)
    reached: list[NodeId] = field(default_factory=list)
    plan: BackwardPlan | None = None


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
