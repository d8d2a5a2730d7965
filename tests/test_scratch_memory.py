"""An op's scratch (OpDef.scratch: a convolution's window copy and padded input) counts in the
graph's peak (``memory_stats``) while the op runs and is gone after it, on every way a plan runs:
the general loop (a first forward, or anomaly detection), run_fast, straight-line code, and a
backward's register program and its straight-line code. The expected bytes are computed here from
the shapes, not from the op's rule; the rule itself is checked against numpy's own allocations
(tracemalloc)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import onlytorch as ot
import onlytorch.codegen as codegen
from onlytorch.ops import REGISTRY
from onlytorch.ops.registry import defop

N, C, H, W, CO, K = 8, 3, 10, 9, 5, 3
ITEM = 8  # float64
SLACK = 4096  # bytes of Python objects beside the arrays, in the tracemalloc comparison


def windows_and_padding(n: int = N, pad: int = 1) -> int:
    """A 3x3 convolution at stride 1 with padding pad: the padded input, and its column copy
    (N, C*kh*kw, oh*ow), one float64 each."""
    hp, wp = H + 2 * pad, W + 2 * pad
    oh, ow = hp - K + 1, wp - K + 1
    return (n * C * hp * wp + n * C * K * K * oh * ow) * ITEM


def conv_graph(pad: int = 1):
    g = ot.Graph(seed=0, dtype="float64")
    x = g.input("x", (None, C, H, W))
    w = g.parameter("w", value=np.random.default_rng(0).standard_normal((CO, C, K, K)))
    y = g.conv2d(x, w, padding=pad, name="y")
    return g, x, w, y


def test_a_convolution_counts_its_window_copy_while_it_runs_and_not_after():
    g, x, _, y = conv_graph()
    g.set_value(x, np.ones((N, C, H, W)))
    before = g.memory_stats()["current_bytes"]
    g.reset_peak_memory()
    out = g.forward_node(y)  # the first forward: the general loop
    stats = g.memory_stats()
    assert stats["current_bytes"] - before == out.nbytes
    assert stats["peak_bytes"] - before == out.nbytes + windows_and_padding()


@pytest.mark.parametrize("way", ["loops", "code", "anomaly"])
def test_every_way_of_running_a_plan_counts_the_same_scratch(monkeypatch, way):
    monkeypatch.setattr(codegen, "HOT_RUNS", 0 if way == "code" else 10**9)
    g, x, _, y = conv_graph()
    if way == "anomaly":
        g.set_anomaly_detection(True)
    for n in (N, 3, N):  # each new batch makes every step stale: the fast paths run from the second
        g.set_value(x, np.ones((n, C, H, W)))
        before = g.memory_stats()["current_bytes"]  # the previous output included: held until replaced
        g.reset_peak_memory()
        out = g.forward_node(y)
        assert g.memory_stats()["peak_bytes"] - before == out.nbytes + windows_and_padding(n), (way, n)


def test_without_padding_the_input_is_not_copied():
    g, x, _, y = conv_graph(pad=0)
    g.set_value(x, np.ones((N, C, H, W)))
    g.reset_peak_memory()
    before = g.memory_stats()["current_bytes"]
    out = g.forward_node(y)
    oh, ow = H - K + 1, W - K + 1
    assert g.memory_stats()["peak_bytes"] - before == out.nbytes + N * C * K * K * oh * ow * ITEM


@pytest.mark.parametrize("hot", [False, True])
def test_a_backward_counts_the_scratch_of_its_convolutions(monkeypatch, hot):
    """The input gradient of a transposed convolution is a convolution (conv2d_core) of the output
    gradient: a backward's register program, and its straight-line code once hot, count its
    window copy and padded input on top of what the same backward holds without them."""
    monkeypatch.setattr(codegen, "HOT_RUNS", 0 if hot else 10**9)

    def backward_peak() -> int:
        g = ot.Graph(seed=0, dtype="float64")
        u = g.parameter("u", value=np.ones((N, CO, H, W)))
        w = g.parameter("w", value=np.ones((CO, C, K, K)))
        loss = g.sum(g.conv_transpose2d(u, w, padding=1))  # its output: (N, C, H, W)
        g.forward_node(loss)
        for _ in range(2):  # when hot, the second backward runs the straight-line code
            g.clear_jacobi()
            g.reset_peak_memory()
            g.backward_nodes_ex([u], loss, retain_graph=True)
        stats = g.memory_stats()
        return stats["peak_bytes"] - stats["current_bytes"]

    counted = backward_peak()
    monkeypatch.setattr(REGISTRY["conv2d_core"], "scratch", None)
    uncounted = backward_peak()
    # the output gradient (N, C, H, W) padded by 1 on each side, and its columns (N, C*3*3, H*W)
    assert counted - uncounted == N * C * ((H + 2) * (W + 2) + K * K * H * W) * ITEM


@pytest.mark.parametrize(
    ("shape", "out", "kernel", "stride", "pad", "groups"),
    [
        ((4, 3, 9, 8), 6, 3, 1, 1, 1),
        ((4, 4, 9, 8), 6, 3, 2, 0, 2),
        ((3, 2, 30, 30), 4, 1, 1, 0, 1),  # a 1x1 kernel at stride 1: the columns are a view, no copy
        ((3, 2, 30, 30), 4, 1, 2, 0, 1),
        ((2, 6, 10, 10), 6, 3, 1, 2, 3),
        ((5, 2, 16, 16), 3, 2, 1, -1, 1),  # a negative pad crops: a view
    ],
)
def test_the_declared_scratch_is_what_numpy_allocates(shape, out, kernel, stride, pad, groups):
    """The rules against tracemalloc's peak during the forward (numpy reports its arrays' memory
    to it), less the result: equal up to the Python objects (array headers, views, tuples) of a few
    hundred bytes each, for the convolution and its weight gradient (the sizes make any array the
    rules missed larger than that)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((out, shape[1] // groups, kernel, kernel))
    attrs = {"stride": (stride, stride), "pads": ((pad, pad), (pad, pad)), "dilation": (1, 1), "groups": groups}
    conv, grad = REGISTRY["conv2d_core"], REGISTRY["conv2d_weight_grad"]
    y, used = _traced(lambda: conv.forward(x, w, **attrs))
    assert conv.scratch is not None
    assert abs(used - y.nbytes - conv.scratch(x, w, **attrs)) < SLACK
    gy = rng.standard_normal(y.shape)
    gw, used = _traced(lambda: grad.forward(x, gy, kernel=(kernel, kernel), **attrs))
    assert grad.scratch is not None
    assert abs(used - gw.nbytes - grad.scratch(x, gy, kernel=(kernel, kernel), **attrs)) < SLACK


def _traced(fn):
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_an_op_that_sees_the_graph_cannot_declare_scratch():
    with pytest.raises(ValueError, match="cannot declare scratch"):

        @defop("scratch_with_context_test", lambda x: (x, "f"), scratch=lambda x: 0)
        def _(ctx, x):
            return x


def test_the_static_estimate_counts_the_scratch_as_the_run_does():
    """footprint's forward model (no_grad_peak, from static shapes) counts a convolution's declared
    scratch while it runs: its peak is the one memory_stats reports for the same forward."""
    from onlytorch import footprint, op_memory

    g, x, w, y = conv_graph()
    core = next(r for r in g.forward_order([y]) if r.op is not None and r.op.name == "conv2d_core")
    assert op_memory.scratch_bytes(core, 7) == windows_and_padding(7)
    xr = g.record(x)
    model, _ = footprint.no_grad_peak(g, [g.record(y)], 7, {xr.index: footprint.node_bytes(xr, 7)})
    g.set_value(x, np.ones((7, C, H, W)))
    start = g.memory_stats()["current_bytes"] - g.record(w).value.nbytes  # the weight is no value of a batch
    g.reset_peak_memory()
    with g.no_grad():
        g.forward_node(y)
    assert g.memory_stats()["peak_bytes"] - g.record(w).value.nbytes == model
    assert start == footprint.node_bytes(xr, 7)
