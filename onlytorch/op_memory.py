"""What one op holds while it runs, from static shapes: the memory estimate's model of an op's
temporaries (footprint.py).

- ``scratch_bytes``: the temporaries of its forward that the op declares (OpDef.scratch, such as a
  convolution's window copy), from stand-ins of its inputs: arrays of the right shape, strides and
  dtype over a one-element buffer, which a scratch rule never reads.
- ``derivative_peak``: the most its derivative rule's nodes hold at once, each until its last use
  within the rule, its results kept, as a backward plan runs them (their scratch included). A rule
  may build several values of the input's size (batch norm's recomputes the centred and
  normalised input, and their products with the output gradient): only building it tells. It is
  built once per signature (op, input shapes and dtypes, attributes, which inputs need a
  gradient) on a throwaway graph, never on the spec's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

if TYPE_CHECKING:
    from .graph import Graph
    from .node import Node

_PEAKS: dict[tuple[Any, ...], int] = {}
_MAX_CACHED = 4096
# Throwaway graphs the rules are built on, by dtype: one serves many builds (each reads only
# the nodes it made), and a new one replaces it once it has grown past _MAX_NODES.
_GRAPHS: dict[str, Graph] = {}
_MAX_NODES = 5000


def _size(shape: Sequence[int | None], batch: int) -> tuple[int, ...]:
    return tuple(batch if d is None else int(d) for d in shape)


def _stand_in(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A read-only array of that shape and dtype, contiguous strides, over one element."""
    strides, step = [], dtype.itemsize
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return as_strided(np.zeros(1, dtype), shape, tuple(reversed(strides)), writeable=False)


def scratch_bytes(n: Node, batch: int) -> int:
    """The bytes of the temporaries n's forward declares (0 for most ops), at the batch size."""
    op = n.op
    if op is None or op.scratch is None:
        return 0
    args = [
        _size(p.shape, batch) if masked else _stand_in(_size(p.shape, batch), p.dtype)
        for p, masked in zip(n.inputs, n.shape_mask or (False,) * len(n.inputs))
    ]
    return int(op.scratch(*args, **n.attrs))


def derivative_peak(
    g: Graph, n: Node, needs: tuple[bool, ...], apart: tuple[bool, ...], batch: int, size: Callable[[Node], int]
) -> int:
    """The most the nodes of n's derivative rule (for the inputs marked in needs, in train mode)
    hold at once at the batch size, besides n's output gradient and the values it reads, and
    without the results for the inputs marked in apart (a target's gradient, counted apart); 0
    when the rule cannot be built apart from the spec's graph (the estimate then counts its
    results only). ``size``: a node's bytes at that batch size (footprint.node_bytes)."""
    op = n.op
    if op is None or op.vjp_rule is None:
        return 0
    key = (
        op.name,
        g.dtype.str,
        tuple((p.shape, p.dtype.str) for p in n.inputs),
        n.shape,
        repr(sorted(n.attrs.items())),
        needs,
        apart,
        batch,
    )
    peak = _PEAKS.get(key)
    if peak is None:
        try:
            peak = _build_and_measure(g, n, needs, apart, batch, size)
        except Exception:  # a rule that needs the spec's graph (its values, its other nodes): results only
            peak = 0
        if len(_PEAKS) >= _MAX_CACHED:
            _PEAKS.clear()
        _PEAKS[key] = peak
    return peak


def _build_and_measure(
    g: Graph, n: Node, needs: tuple[bool, ...], apart: tuple[bool, ...], batch: int, size: Callable[[Node], int]
) -> int:
    from .graph import Graph
    from .ops.registry import VJPContext

    assert n.op is not None and n.op.vjp_rule is not None
    h = _GRAPHS.get(g.dtype.str)
    if h is None or h.node_count() > _MAX_NODES:
        h = _GRAPHS[g.dtype.str] = Graph(seed=0, dtype=g.dtype)
    first = h.node_count()  # input names unique in h
    ins = [h.input(f"in{first}_{i}", p.shape, dtype=p.dtype.name) for i, p in enumerate(n.inputs)]
    out = h.apply(n.op.name, ins, dict(n.attrs))
    gy = h.input(f"gy{first}", n.shape, dtype=n.dtype.name)
    start = h.node_count()
    ctx = VJPContext(g=h, out=out, inputs=tuple(ins), attrs=n.attrs, needs=needs, train=True)
    results, uncounted = [], set()
    for i, gi in enumerate(n.op.vjp_rule(ctx, gy)):
        if gi is None or not needs[i]:
            continue
        if gi.shape != ins[i].shape:  # as build_gradients reduces a broadcast contribution
            gi = h.sum_to(gi, ins[i])
        results.append(gi)
        if apart[i]:
            uncounted.add(gi.index)
    kept = {gi.index for gi in results}
    steps = [r for r in h.forward_order(results) if r.index >= start and r.op is not None]
    last: dict[int, int] = {}
    for pos, r in enumerate(steps):
        for p in r.inputs:
            last[p.index] = pos
    sizes = {r.index: 0 if r.index in uncounted else size(r) for r in steps}
    live = peak = 0
    for pos, r in enumerate(steps):
        live += sizes[r.index]
        peak = max(peak, live + scratch_bytes(r, batch))
        live -= sum(s for i, s in sizes.items() if last.get(i) == pos and i not in kept)
    return peak
