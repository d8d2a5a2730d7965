"""The compiled executor: its fast path (every node stale) against the general path, gradient
buffers taken over without copies, and the fused derivative nodes against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import onlytorch as ot
import onlytorch.graph as graph_module

RNG = np.random.default_rng(7)


def mlp(dtype: str = "float64"):
    g = ot.Graph(seed=3, dtype=dtype)
    x = g.input("x", (None, 3))
    y = g.input("y", (None, 2))
    w1 = g.parameter("w1", (3, 5))
    b1 = g.parameter("b1", (5,), init="normal")
    w2 = g.parameter("w2", (5, 2))
    b2 = g.parameter("b2", (2,), init="normal")
    h = g.tanh(g.linear(x, w1, b1), name="h")
    r = g.relu(g.linear(h, w2, b2), name="r")
    loss = g.mse(r + g.sigmoid(h @ w2), y, name="loss")
    return g, x, y, [w1, b1, w2, b2], loss


def held(g: ot.Graph) -> int:
    """Bytes of every value and gradient the graph holds, counted directly."""
    total = 0
    for n in g._nodes:
        total += 0 if n.value is None else n.value.nbytes
        total += 0 if n.grad is None else n.grad.nbytes
    return total


def train_step(g, x, y, params, loss, X, Y):
    g.set_value(x, X)
    g.set_value(y, Y)
    g.forward_node(loss)
    g.backward_nodes(params, loss)
    out = [g.get_node_grad(p).copy() for p in params], float(g.get_node_value(loss))
    g.clear_jacobi()
    return out


def test_fast_and_general_paths_give_identical_values_and_gradients(monkeypatch):
    X, Y = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 2))
    fast = mlp()
    slow = mlp()
    monkeypatch.setattr(graph_module, "all_stale", lambda entries, train: False)
    for _ in range(3):
        grads_slow, loss_slow = train_step(*slow, X, Y)
        monkeypatch.undo()
        grads_fast, loss_fast = train_step(*fast, X, Y)
        monkeypatch.setattr(graph_module, "all_stale", lambda entries, train: False)
        assert loss_fast == loss_slow
        for a, b in zip(grads_fast, grads_slow):
            assert np.array_equal(a, b)
        X = X + 0.5


def test_new_inputs_recompute_everything_downstream_and_nothing_else():
    g = ot.Graph(dtype="float64")
    x = g.input("x", (None, 2))
    w = g.parameter("w", (2, 2))
    c = g.parameter("c", (2,))
    side = g.exp(c, name="side")  # depends on c only
    out = g.sum(g.tanh(x @ w, name="t") * side, name="out")
    g.set_value(x, RNG.normal(size=(3, 2)))
    g.forward_node(out)
    t_before, side_before = g.get_node_value("t"), g.get_node_value(side)
    g.set_value(x, RNG.normal(size=(3, 2)))
    g.forward_node(out)
    assert g.get_node_value("t") is not t_before
    assert g.get_node_value(side) is side_before  # its inputs did not change
    g.set_value(c, np.ones(2))
    t_now = g.get_node_value("t")
    g.forward_node(out)
    assert g.get_node_value("t") is t_now and g.get_node_value(side) is not side_before
    assert np.allclose(g.get_node_value(side), np.e)


def test_a_value_the_user_holds_never_changes_under_later_steps():
    g, x, y, params, loss = mlp()
    opt = ot.optim.SGD(g, params, lr=0.1)
    g.set_value(x, RNG.normal(size=(4, 3)))
    g.set_value(y, RNG.normal(size=(4, 2)))
    g.forward_node(loss)
    h = g.get_node_value("h")
    kept = h.copy()
    for _ in range(3):
        g.set_value(x, RNG.normal(size=(4, 3)))
        g.forward_node(loss)
        g.backward_nodes(params, loss)
        opt.step()
        g.clear_jacobi()
    assert np.array_equal(h, kept)


def test_taken_over_gradients_accumulate_in_place_and_are_fresh_after_clearing():
    g, x, y, params, loss = mlp()
    g.set_value(x, RNG.normal(size=(4, 3)))
    g.set_value(y, RNG.normal(size=(4, 2)))
    g.forward_node(loss)
    g.backward_nodes_ex(params, loss, retain_graph=True)
    first = g.get_node_grad(params[0])
    once = first.copy()
    g.backward_nodes_ex(params, loss, retain_graph=True)
    assert g.get_node_grad(params[0]) is first  # accumulated into the same array
    assert np.allclose(first, 2 * once)
    g.clear_jacobi()
    g.backward_nodes(params, loss)
    assert g.get_node_grad(params[0]) is not first and np.allclose(first, 2 * once)
    assert np.allclose(g.get_node_grad(params[0]), once)


def test_a_gradient_that_is_a_constant_or_a_forward_value_is_copied():
    g = ot.Graph(dtype="float64")
    a = g.parameter("a", value=np.array(2.0))
    b = g.parameter("b", value=np.array(3.0))
    w = g.parameter("w", value=np.array([1.0, 2.0]))
    loss = g.add(a, b) + g.sum(g.identity(w) * a)  # d/da and d/db start from the constant 1
    for _ in range(3):
        g.forward_node(loss)
        g.backward_nodes_ex([a, b, w], loss, retain_graph=True)
        g.backward_nodes([a, b, w], loss)
        assert g.get_node_grad(b) == 2.0
        assert g.get_node_grad(a) == 2.0 * (1.0 + 3.0)
        assert np.array_equal(g.get_node_grad(w), [4.0, 4.0])
        g.clear_jacobi()
    assert float(g.forward_node(g.add(b, 1.0))) == 4.0


def test_memory_stats_match_what_the_graph_holds_through_training():
    g, x, y, params, loss = mlp("float32")
    opt = ot.optim.Adam(g, params, lr=1e-2)
    for step in range(3):
        g.set_value(x, RNG.normal(size=(8, 3)))
        g.set_value(y, RNG.normal(size=(8, 2)))
        g.forward_node(loss)
        assert g.memory_stats()["current_bytes"] == held(g)
        g.backward_nodes(params, loss)
        assert g.memory_stats()["current_bytes"] == held(g)
        opt.step()
        if step < 2:
            g.clear_jacobi()
            assert g.memory_stats()["current_bytes"] == held(g)
    g.clear_jacobi(params[:2])
    assert g.memory_stats()["current_bytes"] == held(g)


def test_a_failing_op_names_its_node_and_leaves_versions_consistent():
    g = ot.Graph()
    x = g.input("x", (None, 2))
    t = g.tanh(x, name="t")
    y = g.sum(g.reshape(t, shape=(4,), name="flat"), name="y")
    g.set_value(x, np.ones((3, 2), dtype=np.float32))
    with pytest.raises(ot.GraphError, match="'flat'"):
        g.forward_node(y)
    assert g.get_node_value(t) is not None  # computed before the failure
    assert all(n.ver <= g._clock for n in g._nodes)
    g.set_value(x, np.ones((2, 2), dtype=np.float32))
    assert float(g.forward_node(y)) == pytest.approx(4 * np.tanh(1.0))


# ------------------------------------------------------------------ fused derivatives, to second order


def _torch_second_order(fn, *arrays):
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    grads = torch.autograd.grad(out, ts, create_graph=True)
    penalty = sum((gr**2).sum() for gr in grads)
    return [t.detach().numpy() for t in torch.autograd.grad(penalty, ts)], [gr.detach().numpy() for gr in grads]


def _ours_second_order(build, *arrays):
    g = ot.Graph(dtype="float64")
    ps = [g.parameter(f"p{i}", value=a) for i, a in enumerate(arrays)]
    out = build(g, *ps)
    g.forward_node(out)
    grads = g.grad(out, ps, create_graph=True)
    total = g.sum(grads[0] * grads[0])
    for gr in grads[1:]:
        total = total + g.sum(gr * gr)
    g.forward_node(total)
    first = [g.get_node_value(gr) for gr in grads]
    return g.grad(total, ps), first


CASES = {
    "mse mean": (lambda g, p, t: g.mse(g.tanh(p), t), lambda p, t: torch.nn.functional.mse_loss(torch.tanh(p), t)),
    "mse sum, broadcast target": (
        lambda g, p, t: g.mse(p, t, reduction="sum"),
        lambda p, t: ((p - t) ** 2).sum(),
    ),
    "bce_with_logits mean": (
        lambda g, p, t: g.bce_with_logits(p, g.sigmoid(t)),
        lambda p, t: torch.nn.functional.binary_cross_entropy_with_logits(p, torch.sigmoid(t)),
    ),
    "bce_with_logits sum": (
        lambda g, p, t: g.bce_with_logits(g.linear(p, t, g.sum(t, axis=0)), 0.5, reduction="sum"),
        lambda p, t: torch.nn.functional.binary_cross_entropy_with_logits(
            p @ t + t.sum(0), torch.full((4, 3), 0.5, dtype=torch.float64), reduction="sum"
        ),
    ),
    "relu and leaky_relu": (
        lambda g, p, t: g.sum(g.relu(p @ t) * g.leaky_relu(p @ t, 0.2) * g.sigmoid(p @ t)),
        lambda p, t: (torch.relu(p @ t) * torch.nn.functional.leaky_relu(p @ t, 0.2) * torch.sigmoid(p @ t)).sum(),
    ),
}


def test_fused_cross_entropy_matches_torch_to_second_order():
    z = RNG.normal(size=(5, 4))
    labels = np.array([0, 3, 1, 3, 2])
    for reduction in ("mean", "sum"):
        g = ot.Graph(dtype="float64")
        zp = g.parameter("z", value=z)
        y = g.input("y", (None,), dtype="int64")
        g.set_value(y, labels)
        loss = g.cross_entropy(g.tanh(zp), y, reduction=reduction)
        g.forward_node(loss)
        (gz,) = g.grad(loss, [zp], create_graph=True)
        total = g.sum(gz * gz)
        g.forward_node(total)
        tz = torch.tensor(z, requires_grad=True)
        tl = torch.nn.functional.cross_entropy(torch.tanh(tz), torch.tensor(labels), reduction=reduction)
        (tg,) = torch.autograd.grad(tl, tz, create_graph=True)
        (tg2,) = torch.autograd.grad((tg**2).sum(), tz)
        np.testing.assert_allclose(float(g.get_node_value(loss)), tl.item(), rtol=1e-12)
        np.testing.assert_allclose(g.get_node_value(gz), tg.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g.grad(total, zp), tg2.numpy(), rtol=1e-10, atol=1e-12)
        g.set_value(y, np.array([0, 4, 1, 3, 2]))
        with pytest.raises(
            ot.GraphError,
            match=r"cross_entropy: labels 'y' must lie in \[0, 4\) \(the classes on the logits' last axis\), got 4 at index 1",
        ):
            g.forward_node(loss)


def test_fused_losses_give_the_composite_forms_values_and_gradients_bit_for_bit():
    """The fused nodes compute the same expressions, in the same order, as the composite forms
    (reduction='none' followed by the reduction), in float32 where rounding would show."""
    rng = np.random.default_rng(5)
    z = rng.normal(size=(6, 5)).astype(np.float32)
    t = rng.normal(size=(6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=6)
    forms = {
        "mse": (lambda g, p, q, y: g.mse(p, q), lambda g, p, q, y: g.mean(g.mse(p, q, reduction="none"))),
        "bce_with_logits": (
            lambda g, p, q, y: g.bce_with_logits(p, g.sigmoid(q), reduction="sum"),
            lambda g, p, q, y: g.sum(g.bce_with_logits(p, g.sigmoid(q), reduction="none")),
        ),
        "cross_entropy": (
            lambda g, p, q, y: g.cross_entropy(p, y),
            lambda g, p, q, y: g.mean(g.cross_entropy(p, y, reduction="none")),
        ),
    }
    for name, builds in forms.items():
        results = []
        for build in builds:
            g = ot.Graph()
            p = g.parameter("p", value=z)
            q = g.parameter("q", value=t)
            y = g.input("y", (None,), dtype="int64")
            g.set_value(y, labels)
            loss = build(g, p, q, y)
            g.forward_node(loss)
            g.backward_nodes([p, q], loss)
            results.append((g.get_node_value(loss), g.get_node_grad(p), g.get_node_grad(q)))
        fused, composite = results
        for a, b in zip(fused, composite):
            assert (a is None and b is None) or np.array_equal(a, b), name


@pytest.mark.parametrize("case", list(CASES))
def test_fused_derivatives_match_torch_to_second_order(case):
    ours, theirs = CASES[case]
    p = RNG.normal(size=(4, 3))
    t = RNG.normal(size=(3, 3)) if case in ("bce_with_logits sum", "relu and leaky_relu") else RNG.normal(size=(4, 3))
    if case == "mse sum, broadcast target":
        t = RNG.normal(size=(3,))
    got2, got1 = _ours_second_order(ours, p, t)
    want2, want1 = _torch_second_order(theirs, p, t)
    for a, b in zip(got1, want1):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(got2, want2):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_a_backward_still_sees_values_that_changed_after_the_forward():
    """The freshness a forward records is forgotten as soon as anything is recomputed or set."""
    g, x, y, params, loss = mlp()
    g.set_value(x, RNG.normal(size=(4, 3)))
    g.set_value(y, RNG.normal(size=(4, 2)))
    g.forward_node(loss)
    g.backward_nodes(params, loss)  # releases h, keeps the loss
    g.forward_node(g.node("h"))  # h is now newer than the loss computed from it
    with pytest.raises(ot.StaleValueError, match=r"'h' \(tanh\) changed after 'loss'"):
        g.backward_nodes(params, loss)
    g.forward_node(loss)
    g.backward_nodes(params, loss)
    g.forward_node(loss)
    g.set_value(params[0], np.zeros((3, 5)))
    with pytest.raises(ot.StaleValueError, match="'w1' changed after 'loss'"):
        g.backward_nodes(params, loss)
    g.forward_node(loss)
    g.set_eval_mode()
    g.backward_nodes(params, loss)  # no op of this net depends on the mode


def test_batch_norm_running_statistics_keep_the_general_checks():
    g = ot.Graph(dtype="float64")
    x = g.input("x", (None, 3))
    gamma, beta = g.parameter("gamma", value=np.ones(3)), g.parameter("beta", value=np.zeros(3))
    rm, rv = g.state("rm", value=np.zeros(3)), g.state("rv", value=np.ones(3))
    # A node that reads the running mean before batch norm (built after it) updates it.
    reads_rm = g.sum(g.exp(rm), name="reads_rm")
    h = g.batch_norm(g.tanh(x), gamma, beta, rm, rv)
    loss = g.mean(h * h) + reads_rm
    g.set_value(x, RNG.normal(size=(5, 3)))
    g.forward_node(loss)
    with pytest.raises(ot.StaleValueError, match="'rm' changed after"):
        g.backward_nodes([gamma, beta], loss)
    g.forward_node(loss)  # recomputes reads_rm only: batch norm's own inputs did not change
    g.backward_nodes([gamma, beta], loss)
    assert g.get_node_grad(gamma) is not None


# ------------------------------------------------------------------ the common-case fast paths


def _snapshot(g: ot.Graph):
    values = [None if n.value is None else n.value.copy() for n in g._nodes]
    grads = [None if n.grad is None else n.grad.copy() for n in g._nodes]
    return values, grads, g.memory_stats()


def _same(a, b) -> None:
    (va, ga, ma), (vb, gb, mb) = a, b
    assert ma == mb
    for u, v in zip(va + ga, vb + gb):
        assert (u is None and v is None) or (u is not None and v is not None and np.array_equal(u, v))


def test_run_fast_and_the_general_loop_leave_identical_values_gradients_and_memory():
    """run_fast (no anomaly detection) against run (taken with anomaly detection on, which on
    finite values changes nothing else): a training step, a retained backward, a no_grad forward."""
    X, Y = RNG.normal(size=(6, 3)).astype(np.float32), RNG.normal(size=(6, 2)).astype(np.float32)
    fast, general = mlp("float32"), mlp("float32")
    general[0].set_anomaly_detection(True)
    opts = [ot.optim.SGD(m[0], m[3], lr=0.05, momentum=0.9) for m in (fast, general)]
    for step in range(3):
        snaps = []
        for (g, x, y, params, loss), opt in zip((fast, general), opts):
            g.reset_peak_memory()
            g.set_value(x, X + step)
            g.set_value(y, Y)
            g.forward_node(loss)
            g.backward_nodes_ex(params, loss, retain_graph=True)
            g.backward_nodes(params, loss)
            opt.step()
            first = _snapshot(g)
            g.clear_jacobi()
            with g.no_grad():
                g.forward_node(loss)
            snaps.append((first, _snapshot(g)))
        for a, b in zip(*snaps):
            _same(a, b)


def test_a_repeated_backward_call_keeps_every_dynamic_check():
    """backward remembers the targets it was given; the checks that depend on the graph's state
    still run on every call."""
    g, x, y, params, loss = mlp()
    g.set_value(x, RNG.normal(size=(4, 3)))
    g.set_value(y, RNG.normal(size=(4, 2)))
    g.forward_node(loss)
    g.backward_nodes(params, loss)
    with pytest.raises(ot.ReleasedValueError, match="retain_graph=True"):
        g.backward_nodes(params, loss)
    g.forward_node(loss)
    with g.no_grad(), pytest.raises(ot.GraphError, match="gradient tracking is off"):
        g.backward_nodes(params, loss)
    g.set_value(x, RNG.normal(size=(4, 3)))
    with pytest.raises(ot.StaleValueError, match="'x' changed after 'loss'"):
        g.backward_nodes(params, loss)
    with g.no_grad():
        g.forward_node(loss)
    with pytest.raises(ot.GraphError, match="computed under no_grad"):
        g.backward_nodes(params, loss)
    g.forward_node(loss)
    g.clear_jacobi()
    g.detach_node("h")  # a new cut: a new plan, although the targets are the same
    g.backward_nodes(params, loss)
    assert g.get_node_grad(params[0]) is None and g.get_node_grad(params[2]) is not None
    g.attach_node("h")
    g.clear_jacobi()
    label = g.input("label", (None,), dtype="int64")
    for _ in range(2):
        with pytest.raises(ot.GraphError, match="holds integers"):
            g.backward_nodes([params[0], label], loss)


def test_backward_gives_the_same_gradients_however_the_targets_are_given():
    X, Y = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 2))
    results = []
    for spelling in ("list", "tuple", "names", "repeated"):
        g, x, y, params, loss = mlp()
        g.set_value(x, X)
        g.set_value(y, Y)
        targets = {
            "list": list(params),
            "tuple": tuple(params),
            "names": [p.name for p in params],
            "repeated": params + params[:1],
        }[spelling]
        for _ in range(2):  # the second call takes the remembered targets
            g.forward_node(loss)
            g.backward_nodes(targets, loss)
        results.append([g.get_node_grad(p) for p in params])
        assert g.memory_stats()["current_bytes"] == held(g)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def test_plain_sgd_step_matches_the_general_step():
    """SGD without momentum, weight decay or maximize takes its own loop; max_grad_norm large
    enough never to clip sends the same update through Optimizer.step and _update."""
    X, Y = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 2))
    nets = [mlp(), mlp()]
    opts = [
        ot.optim.SGD(nets[0][0], nets[0][3], lr=0.1),
        ot.optim.SGD(nets[1][0], nets[1][3], lr=0.1, max_grad_norm=1e30),
    ]
    for _ in range(3):
        for (g, x, y, params, loss), opt in zip(nets, opts):
            g.set_value(x, X)
            g.set_value(y, Y)
            g.forward_node(loss)
            g.backward_nodes(params[:3], loss)  # the last parameter has no gradient: skipped
            opt.step()
            g.clear_jacobi()
    for p, q in zip(nets[0][3], nets[1][3]):
        assert np.array_equal(nets[0][0].get_node_value(p), nets[1][0].get_node_value(q))
    s0, s1 = opts[0].state_dict(), opts[1].state_dict()
    assert [int(s0[f"step/{p.name}"]) for p in nets[0][3]] == [3, 3, 3, 0]
    assert all(np.array_equal(s0[k], s1[k]) for k in s0 if k.startswith("step/"))


def test_the_mean_of_the_fused_losses_is_numpys_division_bit_for_bit():
    from onlytorch.ops.losses import _mean_all

    rng = np.random.default_rng(11)
    for dtype in (np.float32, np.float64):
        for size in (0, 1, 3, 7, 1000):
            for _ in range(20):
                x = (rng.normal(size=size) * 10.0 ** rng.uniform(-20, 20)).astype(dtype)
                total = np.add.reduce(x, axis=None)
                with np.errstate(all="ignore"):
                    want = total.dtype.type(total / np.intp(x.size))
                    got = _mean_all(x)
                assert type(got) is type(want) and got.tobytes() == want.tobytes()


def test_set_value_keeps_its_own_copy_of_an_array_of_the_right_dtype():
    g = ot.Graph()
    x = g.input("x", (None, 2))
    w = g.parameter("w", value=np.ones((2, 2), dtype=np.float32))
    out = g.sum(x @ w)
    X = np.ones((3, 2), dtype=np.float32)
    g.set_value(x, X)
    X[:] = 5.0
    assert float(g.forward_node(out)) == 12.0
    W = np.full((2, 2), 2.0, dtype=np.float32)
    g.set_value(w, W)
    W[:] = 0.0
    assert float(g.forward_node(out)) == 24.0
    g.set_value(x, np.ones((2, 4), dtype=np.float32)[:, ::2])  # a strided view is copied too
    assert g.get_node_value(x).base is None and float(g.forward_node(out)) == 16.0
    with pytest.raises(ot.ShapeError, match=r"has shape \(3, 3\), expected \(N, 2\)"):
        g.set_value(x, np.ones((3, 3), dtype=np.float32))
    with pytest.raises(ot.ShapeError, match=r"has shape \(3,\)"):
        g.set_value(x, np.ones(3, dtype=np.float32))


def test_quiet_is_numpys_errstate_ignore_nested_restored_and_per_call():
    import warnings

    from onlytorch.executor import quiet

    seen = []

    @quiet
    def inner(x):
        seen.append(np.geterr())
        return np.exp(x) / np.zeros(1)

    @quiet
    def outer(x):
        out = inner(x)
        seen.append(np.geterr())
        raise ValueError(out)

    before = np.geterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that got through would raise here
        with pytest.raises(ValueError):
            outer(np.array([1000.0]))
        with np.errstate(over="raise"):
            assert np.isinf(inner(np.array([1000.0]))).all()  # inside quiet the caller's "raise" is off
            assert np.geterr()["over"] == "raise"  # and back after it
    assert np.geterr() == before
    assert all(set(s.values()) == {"ignore"} for s in seen) and len(seen) == 3


def test_the_loss_gradients_follow_a_changing_upstream_gradient():
    # mse/bce/cross-entropy gradients memoise gy / size on gy's bytes: every new gy (also -0.0
    # after 0.0) is a new entry, and each gradient is bit for bit the one computed without memo
    from onlytorch.ops import losses

    def build():
        g = ot.Graph(dtype="float64")
        p = g.parameter("p", value=np.array([[0.5], [-1.0], [2.0]]))
        t = g.constant(np.array([[0.0], [1.0], [1.5]]))
        s = g.input("s", ())
        loss = g.mse(p, t) * s + g.bce_with_logits(p, g.sigmoid(t)) * s
        return g, p, t, s, loss

    g, p, t, s, loss = build()
    for scale in (1.0, 2.0, -0.0, 0.0, 1.0, 3.5, 2.0):
        g.set_value(s, np.array(scale))
        g.forward_node(loss)
        (gp,) = g.grad(loss, [p])
        pv, tv = g.get_node_value(p), g.get_node_value(t)
        want = scale * (2 * (pv - tv) / 3 + (1 / (1 + np.exp(-pv)) - 1 / (1 + np.exp(-tv))) / 3)
        np.testing.assert_allclose(gp, want, rtol=1e-12, atol=0)
        losses._SPREAD.clear()
        g2, p2, _, s2, loss2 = build()
        g2.set_value(s2, np.array(scale))
        g2.forward_node(loss2)
        (ref,) = g2.grad(loss2, [p2])
        assert np.array_equal(gp, ref) and np.array_equal(np.signbit(gp), np.signbit(ref))
