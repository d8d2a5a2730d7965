"""Finite-difference checks of the analytic gradients (central differences, float64)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import GraphError
from .graph import Graph
from .node import NodeId


def numeric_grad(g: Graph, y: NodeId, x: NodeId, eps: float = 1e-6) -> np.ndarray:
    """d y / d x by central differences, perturbing each element of the leaf x in turn."""
    node = g.record(x)
    if node.op is not None:
        raise GraphError(f"finite differences need a leaf (input, parameter or state); {node.describe()} is computed")
    base = np.array(node.value, dtype=np.float64, copy=True)
    out = np.zeros_like(base)
    flat = out.reshape(-1)
    probe = base.copy()
    pflat = probe.reshape(-1)
    try:
        for i in range(pflat.size):
            orig = pflat[i]
            pflat[i] = orig + eps
            g.set_value(x, probe)
            hi = float(np.sum(g.forward_node(y)))
            pflat[i] = orig - eps
            g.set_value(x, probe)
            lo = float(np.sum(g.forward_node(y)))
            pflat[i] = orig
            flat[i] = (hi - lo) / (2 * eps)
    finally:
        g.set_value(x, base)
    return out


def gradcheck(
    g: Graph,
    y: NodeId,
    xs: NodeId | Sequence[NodeId],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
) -> bool:
    """Compare g.grad(y, xs) with central finite differences. Needs a float64 graph and leaf xs.
    Returns True, or raises GraphError naming the first mismatching node (False when
    raise_exception is off)."""
    if g.dtype != np.float64:
        raise GraphError("gradcheck needs a float64 graph: Graph(dtype='float64')")
    xs = [xs] if isinstance(xs, NodeId) else list(xs)
    g.forward_node(y)
    analytic = g.grad(y, xs, retain_graph=True, allow_unused=True)
    for x, a in zip(xs, analytic):
        num = numeric_grad(g, y, x, eps)
        a = np.zeros_like(num) if a is None else a
        if not np.allclose(a, num, atol=atol, rtol=rtol):
            err = np.abs(a - num)
            where = np.unravel_index(int(np.argmax(err)), err.shape) if err.ndim else ()
            msg = (
                f"gradcheck of {g.record(y).label()} with respect to {g.record(x).label()}: analytic "
                f"{a[where]!r} vs numeric {num[where]!r} at index {where} (max abs error {err.max():.3g})"
            )
            if raise_exception:
                raise GraphError(msg)
            return False
    g.forward_node(y)
    return True


def gradgradcheck(
    g: Graph,
    y: NodeId,
    xs: NodeId | Sequence[NodeId],
    seed: int = 0,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
) -> bool:
    """Check second derivatives: the gradient of sum(grad(y, xs) * v), for random v, against
    finite differences of the first gradients."""
    xs = [xs] if isinstance(xs, NodeId) else list(xs)
    firsts = g.grad(y, xs, create_graph=True, allow_unused=True)
    rng = np.random.default_rng(seed)
    total: NodeId | None = None
    for gx in firsts:
        if gx is None:
            continue
        v = g.constant(rng.normal(size=tuple(d if d is not None else 1 for d in gx.shape)))
        term = g.sum(gx * v)
        total = term if total is None else total + term
    if total is None:
        return True
    return gradcheck(g, total, xs, eps=eps, atol=atol, rtol=rtol)
