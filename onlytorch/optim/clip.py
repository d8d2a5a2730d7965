"""Gradient clipping, in place on the gradients the graph accumulated (torch.nn.utils semantics)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import GraphError
from ..graph import Graph
from ..node import Node, NodeId


def clip_grad_norm(
    graph: Graph,
    params: NodeId | Iterable[NodeId],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> float:
    """Scale the gradients of params in place so that their total norm is at most max_norm.

    As ``torch.nn.utils.clip_grad_norm_``: the total norm is the ``norm_type``-norm of all the
    gradients that exist (params without one are ignored) viewed as one vector (``inf`` for the
    largest absolute value); every gradient is multiplied by ``max_norm / (total + 1e-6)`` when
    that is below 1. Returns the total norm before clipping (0.0 when no gradient exists). With
    ``error_if_nonfinite`` a NaN or infinite total norm raises instead of clipping."""
    nodes = _grad_nodes(graph, params, "clip_grad_norm")
    if not _real(max_norm) or math.isnan(max_norm) or max_norm < 0:
        raise GraphError(f"clip_grad_norm: max_norm must be a number >= 0, got {max_norm!r}")
    if not _real(norm_type) or math.isnan(norm_type) or norm_type <= 0:
        raise GraphError(f"clip_grad_norm: norm_type must be a number > 0 or inf, got {norm_type!r}")
    return _clip_norm(nodes, float(max_norm), float(norm_type), error_if_nonfinite)


def clip_grad_value(graph: Graph, params: NodeId | Iterable[NodeId], clip_value: float) -> None:
    """Clamp every element of the gradients of params to [-clip_value, clip_value], in place
    (``torch.nn.utils.clip_grad_value_``); params without a gradient are ignored."""
    nodes = _grad_nodes(graph, params, "clip_grad_value")
    if not _real(clip_value) or math.isnan(clip_value) or clip_value < 0:
        raise GraphError(f"clip_grad_value: clip_value must be a number >= 0, got {clip_value!r}")
    c = float(clip_value)
    for n in nodes:
        if n.grad is not None:
            np.clip(n.grad, -c, c, out=n.grad)


def _total_norm(nodes: list[Node], norm_type: float) -> float:
    """The norm of the existing gradients of nodes, as one vector: per-tensor norms, then the
    norm of those (torch's order of reduction)."""
    with np.errstate(all="ignore"):
        norms = [_vector_norm(n.grad.reshape(-1), norm_type) for n in nodes if n.grad is not None]
        if not norms:
            return 0.0
        return float(_vector_norm(np.array(norms, dtype=nodes[0].dtype), norm_type))


def _clip_norm(nodes: list[Node], max_norm: float, norm_type: float, error_if_nonfinite: bool = False) -> float:
    total = _total_norm(nodes, norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        bad = next((n.name for n in nodes if n.grad is not None and not np.isfinite(n.grad).all()), "?")
        raise GraphError(
            f"clip_grad_norm: the total gradient norm of order {norm_type} is {total} (the gradient of {bad!r} is "
            "not finite), so it cannot be clipped; pass error_if_nonfinite=False to scale by it anyway"
        )
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # also NaN, which (as in torch) is passed on to the gradients
        with np.errstate(all="ignore"):
            for n in nodes:
                if n.grad is not None:
                    n.grad *= coef
    return total


def _vector_norm(v: np.ndarray, p: float) -> Any:
    if v.size == 0:
        return v.dtype.type(0)
    if p == math.inf:
        return np.max(np.abs(v))
    if p == 2.0:
        return np.sqrt(np.dot(v, v))
    if p == 1.0:
        return np.sum(np.abs(v))
    return np.sum(np.abs(v) ** p) ** (1.0 / p)


def _real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _grad_nodes(graph: Graph, params: Any, what: str) -> list[Node]:
    if not isinstance(graph, Graph):
        raise GraphError(
            f"{what}: the first argument must be the Graph that holds the gradients, got {type(graph).__name__}"
        )
    items = [params] if isinstance(params, (NodeId, str)) else params
    try:
        items = list(items)
    except TypeError:
        raise GraphError(f"{what}: params must be a list of nodes, got {type(params).__name__}") from None
    nodes: list[Node] = []
    seen: set[int] = set()
    for p in items:
        if isinstance(p, NodeId) and p.graph is not graph:
            raise GraphError(f"{what}: node {p.name!r} belongs to another graph than the one given")
        if not isinstance(p, (NodeId, str)):
            raise GraphError(f"{what}: params must hold nodes, got {type(p).__name__} {p!r}")
        n = graph.record(p)
        if n.index in seen:
            raise GraphError(f"{what}: node {n.name!r} appears more than once in params")
        seen.add(n.index)
        nodes.append(n)
    return nodes
