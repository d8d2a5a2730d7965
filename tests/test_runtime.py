"""The engine's run-time state has one owner (onlytorch/runtime.py): what Graph's public methods
report is the Runtime's state, the operations on it keep the rules (versions, bytes, peak), and
the executor's loops and codegen's straight-line code are made from the same source templates."""

from __future__ import annotations

import numpy as np
import pytest

import onlytorch as ot
import onlytorch.codegen as codegen
from onlytorch import executor
from onlytorch.runtime import Runtime


def small_graph():
    g = ot.Graph(seed=3, dtype="float64")
    x = g.input("x", (None, 2))
    w = g.parameter("w", value=np.ones((2, 3)))
    loss = g.mean(g.tanh(x @ w), name="loss")
    g.set_value(x, np.ones((4, 2)))
    return g, x, w, loss


def test_the_graph_reports_its_runtime_state():
    g, _x, _w, loss = small_graph()
    rt = g.runtime
    assert isinstance(rt, Runtime)
    g.forward_node(loss)
    assert g.memory_stats() == {"current_bytes": rt.nbytes, "peak_bytes": rt.peak}
    assert rt.nbytes == sum(n.value.nbytes for n in g.records() if n.value is not None)
    g.set_eval_mode()
    assert not rt.train and not g.is_train_mode()
    with g.no_grad(eval_mode=False):
        assert not rt.grad_enabled and not g.is_grad_enabled()
    assert rt.grad_enabled
    g.set_anomaly_detection(True)
    assert rt.anomaly
    g.reset_peak_memory()
    assert rt.peak == rt.nbytes


def test_mark_changed_is_one_tick_that_makes_readers_stale():
    g, x, w, loss = small_graph()
    g.forward_node(loss)
    rt = g.runtime
    before = rt.clock
    wn = g.record(w)
    wn.value *= 2.0  # changed in place, as an optimizer step does
    rt.mark_changed(wn, g.record(x))
    assert rt.clock == before + 1 and wn.ver == g.record(x).ver == rt.clock
    assert float(g.forward_node(loss)) == pytest.approx(np.tanh(4.0))


def test_store_release_and_drop_keep_the_byte_count():
    g, x, _w, loss = small_graph()
    rt = g.runtime
    g.forward_node(loss)
    held = rt.nbytes
    ops = [n for n in g.records() if n.op is not None]
    rt.release(ops, "a test")
    assert all(n.value is None and n.released_by == "a test" for n in ops)
    assert rt.nbytes == held - sum(np.zeros(n.rshape).nbytes for n in ops)
    g.forward_node(loss)
    rt.drop(ops)
    assert all(n.value is None and n.released_by is None for n in ops)
    rt.store(g.record(x), np.ones((8, 2)))  # a bigger batch: 64 more bytes, and a new peak
    assert rt.nbytes == held - sum(np.zeros(n.rshape).nbytes for n in ops) + 64
    assert rt.peak >= rt.nbytes


def test_accumulate_takes_fresh_arrays_copies_views_and_stops_at_a_nonfinite_gradient():
    g = ot.Graph(dtype="float64")
    a, b = (g.record(g.parameter(n, value=np.zeros(3))) for n in ("a", "b"))
    rt = g.runtime
    fresh, base = np.ones(3), np.ones(6)
    rt.accumulate(a, [a, b], [True, True], [fresh, base[:3]])
    assert a.grad is fresh and b.grad is not None and b.grad.base is None  # a view is copied
    assert set(rt.graded) == {a.index, b.index}
    added = rt.nbytes
    rt.accumulate(a, [a, b], [True, False], [np.ones(3), None])
    assert np.array_equal(a.grad, [2.0] * 3) and rt.nbytes == added  # added in place: no new bytes
    rt.clear_grads()
    assert a.grad is None and b.grad is None and not rt.graded
    start = rt.nbytes
    rt.anomaly = True
    with pytest.raises(ot.NonFiniteError, match="the gradient of 'a' with respect to parameter 'b' is not finite"):
        rt.accumulate(a, [a, b], [True, True], [np.ones(3), np.array([1.0, np.nan, 0.0])])
    assert rt.nbytes == start + a.grad.nbytes  # what was added before the error is counted


def test_rng_assignment_reaches_the_ops_that_draw_from_it():
    def dropout_values(g_rng_seed: int | None) -> np.ndarray:
        g = ot.Graph(seed=0, dtype="float64")
        x = g.input("x", (None, 50))
        y = g.dropout(x, 0.5)
        if g_rng_seed is not None:
            g.rng = np.random.default_rng(g_rng_seed)  # what restoring a checkpoint does
            assert g.runtime.rng is g.rng
        g.set_value(x, np.ones((2, 50)))
        return np.asarray(g.forward_node(y))

    assert np.array_equal(dropout_values(7), dropout_values(7))
    assert not np.array_equal(dropout_values(7), dropout_values(None))


def test_the_loops_and_the_generated_code_share_one_bookkeeping_text(monkeypatch):
    sources: list[str] = []
    build = codegen._build
    monkeypatch.setattr(codegen, "HOT_RUNS", 0)
    monkeypatch.setattr(codegen, "_build", lambda source, *a, **k: sources.append(source) or build(source, *a, **k))
    g, _x, w, loss = small_graph()
    g.forward_node(loss)
    g.backward_nodes([w], loss)
    forward, backward = sources
    commit = "\n".join(executor.commit_source([]))
    assert commit.replace("\n", "\n" + " " * 8) in forward
    assert "\n".join(executor.add_gradient_source(True)).replace("\n", "\n" + " " * 4) in backward
    # The loops carry the same text with every field (run_fast's drops compare pass ids).
    assert set(executor.commit_source()) >= set(executor.commit_source([]))
    assert executor.run.__name__ == "run" and executor.run_fast.__name__ == "run_fast"
