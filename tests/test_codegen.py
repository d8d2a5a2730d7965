"""Plans as straight-line code (onlytorch/codegen.py) and backward plans as register programs
(executor.RegisterProgram): each does exactly what the loops do. Three ways are run side by
side on the same graphs: the generated code (the default), the executor's loops (MAX_STEPS=0)
and the general loop (anomaly detection on, which on finite values changes nothing else)."""

from __future__ import annotations

import ast
import pathlib
import re

import numpy as np
import pytest

import onlytorch as ot
import onlytorch.codegen as codegen
import onlytorch.plan as plan_module
from onlytorch.executor import RegisterProgram

RNG = np.random.default_rng(11)


@pytest.fixture(autouse=True)
def hot_at_once(monkeypatch):
    """Code is built on a plan's first run here (normally after codegen.HOT_RUNS runs)."""
    monkeypatch.setattr(codegen, "HOT_RUNS", 0)


def model(seed: int = 0, bn: bool = False):
    """An MLP with broadcasting, a shape-reading reshape, a reduction over one axis, a parameter
    used twice, a dropout (an op that sees the graph's RNG) and optionally batch norm."""
    g = ot.Graph(seed=seed, dtype="float32")
    x = g.input("x", (None, 3))
    y = g.input("y", (None, 2))
    w1 = g.parameter("w1", (3, 6))
    b1 = g.parameter("b1", (6,), init="normal")
    w2 = g.parameter("w2", (6, 2))
    s = g.parameter("s", (), init="ones")
    h = g.tanh(g.linear(x, w1, b1), name="h")
    params = [w1, b1, w2, s]
    if bn:
        norm = ot.nn.BatchNorm(g, 6, name="bn")
        h = norm(h)
        params += norm.parameters()
    h = g.dropout(h, 0.25, name="drop")
    flat = g.reshape(h, shape=(-1,), name="flat")
    back = g.reshape(flat, shape=(-1, 6), name="back")
    out = g.matmul(back * s, w2) + g.mean(back, axis=1, keepdims=True)
    loss = g.mse(out, y) + 0.1 * g.sum(s * s) + g.mean(w1 @ w2)
    return g, x, y, params, loss


def run_steps(g, x, y, params, loss, steps: int = 3):
    opt = ot.optim.Adam(g, params, lr=0.01)
    seen = []
    for i in range(steps):
        g.reset_peak_memory()
        g.set_value(x, RNG.normal(size=(5, 3)).astype(np.float32) + i)
        g.set_value(y, RNG.normal(size=(5, 2)).astype(np.float32))
        g.forward_node(loss)
        g.backward_nodes_ex(params, loss, retain_graph=True)
        g.backward_nodes(params, loss)
        grads = [g.get_node_grad(p).copy() for p in params]
        seen.append((float(g.get_node_value(loss)), grads, g.memory_stats()))
        opt.step()
        g.clear_jacobi()
        with g.no_grad():
            seen.append(float(g.forward_node(loss)))
        seen.append(g.memory_stats())
        g.forward_node(loss)
        seen.append([a.copy() for a in g.grad(loss, params[:2])])
        seen.append(g.memory_stats())
    return seen


def same(a, b) -> None:
    assert type(a) is type(b)
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            same(u, v)
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b)
    else:
        assert a == b


def replay(bn: bool, anomaly: bool = False):
    RNG.bit_generator.state = np.random.default_rng(1).bit_generator.state
    m = model(bn=bn)
    m[0].set_anomaly_detection(anomaly)
    return run_steps(*m)


@pytest.mark.parametrize("bn", [False, True], ids=["mlp", "with batch norm"])
def test_generated_code_the_loops_and_the_general_path_agree_bit_for_bit(monkeypatch, bn):
    built: list[int] = []
    build = codegen._build
    monkeypatch.setattr(codegen, "_build", lambda *a, **k: built.append(1) or build(*a, **k))
    generated = replay(bn)
    assert len(built) == 4  # forward with grad and under no_grad, the backward and the grad plans
    monkeypatch.setattr(codegen, "HOT_RUNS", 10**9)
    loops = replay(bn)
    # backward plans without a register program run their steps through run_fast (or its code)
    monkeypatch.setattr(plan_module, "RegisterProgram", lambda *a: None)
    stepped_loops = replay(bn)
    monkeypatch.setattr(codegen, "HOT_RUNS", 0)
    stepped_code = replay(bn)
    general = replay(bn, anomaly=True)
    assert len(built) == 4 + 2  # the two forward plans of stepped_code
    for other in (loops, stepped_loops, stepped_code, general):
        same(generated, other)


def test_the_backward_runs_as_a_register_program_unless_an_op_sees_the_graph():
    g, x, y, params, loss = model()
    g.set_value(x, np.ones((2, 3), np.float32))
    g.set_value(y, np.ones((2, 2), np.float32))
    g.forward_node(loss)
    g.backward_nodes(params, loss)
    (plan,) = g._bwd_plans.values()
    assert isinstance(plan.program, RegisterProgram) and plan.acc_runner is not None
    # the gradient nodes' values never land on the nodes: they live in the program's registers
    assert all(n.value is None for n in plan.program.nodes)
    # a shape-only input from outside (the reshape's) is read from its node when the step runs
    assert any(args for *_, args in plan.program.steps)


def test_a_gradient_that_is_a_node_outside_the_program_and_shared_gradients():
    g = ot.Graph(dtype="float64")
    p = g.parameter("p", value=np.array(2.0))
    a = g.parameter("a", value=np.ones(3))
    b = g.parameter("b", value=np.ones(3))
    g.forward_node(p)
    g.backward_nodes([p], p)  # d p / d p: the seed constant itself, no step computes it
    assert g.get_node_grad(p) == 1.0
    total = g.sum(a + b)  # a and b share one gradient node
    g.forward_node(total)
    g.backward_nodes_ex([a, b], total, retain_graph=True)
    g.backward_nodes([a, b], total)
    assert np.array_equal(g.get_node_grad(a), [2.0] * 3) and np.array_equal(g.get_node_grad(b), [2.0] * 3)
    assert g.get_node_grad(a) is not g.get_node_grad(b)
    held = sum(n.value.nbytes for n in g._nodes if n.value is not None)
    held += sum(n.grad.nbytes for n in g._nodes if n.grad is not None)
    assert g.memory_stats()["current_bytes"] == held


def failing_backward():
    g = ot.Graph(dtype="float64")
    w = g.parameter("w", value=np.ones((2, 2)))
    x = g.input("x", (None, 2))
    loss = g.sum(g.tanh(x @ w, name="t"), name="loss")
    g.set_value(x, np.ones((3, 2)))
    g.forward_node(loss)
    g._backward_plan(g._nodes[loss.index], [g._nodes[w.index]])
    (plan,) = g._bwd_plans.values()
    prog = plan.program
    i = next(i for i, n in enumerate(prog.nodes) if n.op.name == "tanh_grad")

    def broken(gy, y):
        raise ValueError("operands could not be broadcast")

    prog.steps[i] = (broken, *prog.steps[i][1:])
    return g, w, loss, plan, prog.nodes[i]


@pytest.mark.parametrize("how", ["generated", "loop"])
def test_a_failing_backward_op_names_its_node_and_holds_nothing(monkeypatch, how):
    if how == "loop":
        monkeypatch.setattr(codegen, "MAX_STEPS", 0)
    g, w, loss, _, node = failing_backward()
    before = g.memory_stats()["current_bytes"]
    with pytest.raises(ot.GraphError) as e:
        g.backward_nodes([w], loss)
    assert str(e.value).startswith(f"{node.describe()} failed on inputs ")
    assert "(3, 2)" in str(e.value) and "operands could not be broadcast" in str(e.value)
    assert g.memory_stats()["current_bytes"] == before
    assert g.get_node_grad(w) is None


NAMES = ["x'); import os; ('", "__import__('os').system('true')", "n0", "f1.value"]


def test_no_user_text_reaches_the_generated_source(monkeypatch):
    sources: list[str] = []
    build = codegen._build

    def spy(source, bound, **helpers):
        sources.append(source)
        return build(source, bound, **helpers)

    monkeypatch.setattr(codegen, "_build", spy)
    g = ot.Graph(dtype="float64")
    x = g.input(NAMES[0], (None, 2))
    w = g.parameter(NAMES[1], value=np.ones((2, 2)))
    h = g.tanh(x @ w, name=NAMES[2])
    loss = g.mean(g.reshape(h, shape=(-1,)) * 2.0, name=NAMES[3])
    g.set_value(x, np.ones((3, 2)))
    g.forward_node(loss)
    g.backward_nodes([w], loss)
    with g.no_grad():
        g.forward_node(loss)
    assert len(sources) == 3  # forward with grad, the backward, forward under no_grad
    template_words = {
        "run", "g", "train", "grad_on", "pid", "clock", "nbytes", "peak", "n", "out", "old", "e",
        "ndarray", "asarray", "type", "Exception", "GraphError", "failed", "again", "dtype",
        "value", "rshape", "shape", "ver", "mode", "released_by", "pass_id", "tracked", "_pass",
        "_clock", "_bytes", "_peak", "x", "gv", "grad", "graded", "_graded", "added", "array", "base",
        "index",
    }  # fmt: skip
    for source in sources:
        ast.parse(source)
        for name in NAMES[:2]:  # (the other two look like generated names on purpose: no clash)
            assert name not in source
        for word in set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", source)):
            assert word in template_words or re.fullmatch(r"[a-zA-Z]{1,2}\d+(_\d+)?", word) or word in {
                "def", "try", "except", "raise", "from", "return", "if", "is", "not", "and", "or", "None", "as",
                "finally", "else", "pass",
            }, word  # fmt: skip
    assert float(g.get_node_value(loss)) == pytest.approx(2 * np.tanh(2.0))


def test_code_is_generated_once_per_plan_and_never_while_a_spec_compiles(monkeypatch):
    calls: list[int] = []
    build = codegen._build
    monkeypatch.setattr(codegen, "_build", lambda *a, **k: calls.append(1) or build(*a, **k))
    g, x, y, params, loss = model()
    for _ in range(4):
        g.set_value(x, RNG.normal(size=(4, 3)).astype(np.float32))
        g.set_value(y, RNG.normal(size=(4, 2)).astype(np.float32))
        g.forward_node(loss)
        g.backward_nodes(params, loss)
        g.clear_jacobi()
    assert len(calls) == 2
    from onlytorch.compile import compile_file

    calls.clear()
    compiled, report = compile_file(pathlib.Path(__file__).resolve().parents[1] / "specs" / "gan_ring.yaml")
    assert compiled is not None and not report.errors
    assert calls == []


def test_a_plan_runs_through_the_loops_until_it_is_hot(monkeypatch):
    monkeypatch.setattr(codegen, "HOT_RUNS", 3)
    built: list[int] = []
    build = codegen._build
    monkeypatch.setattr(codegen, "_build", lambda *a, **k: built.append(1) or build(*a, **k))
    g, x, y, params, loss = model()
    (w1,) = params[:1]
    seen = []
    for step in range(6):
        g.set_value(x, np.full((4, 3), step, np.float32))
        g.set_value(y, np.ones((4, 2), np.float32))
        g.forward_node(loss)
        g.backward_nodes(params, loss)
        seen.append(g.get_node_grad(w1).copy())
        g.clear_jacobi()
        # the forward plan and the backward plan are each built on their fourth run
        assert len(built) == (0 if step < 3 else 2)
    monkeypatch.setattr(codegen, "HOT_RUNS", 10**9)
    g2, x2, y2, params2, loss2 = model()
    for step in range(6):
        g2.set_value(x2, np.full((4, 3), step, np.float32))
        g2.set_value(y2, np.ones((4, 2), np.float32))
        g2.forward_node(loss2)
        g2.backward_nodes(params2, loss2)
        np.testing.assert_array_equal(g2.get_node_grad(params2[0]), seen[step])
        g2.clear_jacobi()


def test_a_plan_whose_first_run_is_generated_code_can_call_numpy_that_imports_on_first_use():
    """Generated code runs with almost no builtins; C functions it calls import through the calling
    frame's builtins (anomaly detection's first floating-point check imports on first use). In a
    fresh interpreter a plan generated before its first run must still work."""
    import subprocess
    import sys

    code = (
        "import numpy as np, onlytorch as ot, onlytorch.codegen as cg\n"
        "cg.HOT_RUNS = 0\n"
        "g = ot.Graph(seed=0, dtype='float32'); g.set_anomaly_detection(True)\n"
        "x = g.input('x', (None, 3)); w = g.parameter('w', (3, 2)); b = g.parameter('b', (2,))\n"
        "loss = g.mean(g.linear(x, w, b))\n"
        "g.set_value(x, np.ones((4, 3), np.float32))\n"
        "g.forward_node(loss); g.backward_nodes([w, b], loss)\n"
        "print(float(g.get_node_value(loss)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert np.isfinite(float(done.stdout.strip()))
