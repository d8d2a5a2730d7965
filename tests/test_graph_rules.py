"""The gradient-flow rules of design §1, one focused test each, checked against PyTorch in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import onlytorch as ot
from onlytorch.ops.registry import REGISTRY

RNG = np.random.default_rng(1234)
X1 = RNG.normal(size=(5, 3))
X2 = RNG.normal(size=(5, 3))
W1 = RNG.normal(size=(3, 4))
B1 = RNG.normal(size=(4,))
W2 = RNG.normal(size=(4, 1))
C = RNG.normal(size=(4,))
S = RNG.normal(size=(1,))


def tt(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def assert_close(ours: np.ndarray | None, theirs: torch.Tensor | np.ndarray | None) -> None:
    assert ours is not None, "no value or gradient on our side"
    assert theirs is not None, "no value or gradient on torch's side"
    ref = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert np.shape(ours) == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


class Net:
    """x -> h = tanh(x @ w1 + b1) -> out = (h * c) @ w2 + s -> loss = mean(out ** 2), with a constant c
    and a state s (so every kind of leaf is present)."""

    def __init__(self) -> None:
        g = self.g = ot.Graph(dtype="float64")
        self.x = g.input("x", shape=(None, 3))
        self.w1 = g.parameter("w1", value=W1)
        self.b1 = g.parameter("b1", value=B1)
        self.w2 = g.parameter("w2", value=W2)
        self.c = g.constant(C, name="c")
        self.s = g.state("s", value=S)
        self.lin = g.linear(self.x, self.w1, self.b1, name="lin")
        self.h = g.tanh(self.lin, name="h")
        self.hc = g.mul(self.h, self.c, name="hc")
        self.out = g.add(g.matmul(self.hc, self.w2, name="mm"), self.s, name="out")
        self.loss = g.mean(g.square(self.out, name="sq"), name="loss")
        self.params = [self.w1, self.b1, self.w2]
        self.intermediates = ["lin", "h", "hc", "mm", "out", "sq"]

    def run(self, x: np.ndarray) -> float:
        self.g.set_value(self.x, x)
        return float(self.g.forward_node(self.loss))


def torch_loss(x: np.ndarray, p: list[torch.Tensor]) -> torch.Tensor:
    w1, b1, w2 = p
    h = torch.tanh(tt(x) @ w1 + b1)
    return (((h * tt(C)) @ w2 + tt(S)) ** 2).mean()


def torch_params() -> list[torch.Tensor]:
    return [tt(W1, True), tt(B1, True), tt(W2, True)]


# ---------------------------------------------------------------- accumulation


def test_gradients_accumulate_across_backward_calls_until_cleared():
    net = Net()
    g = net.g
    net.run(X1)
    g.backward_nodes(net.params, net.loss)
    net.run(X2)
    g.backward_nodes(net.params, net.loss)

    p = torch_params()
    torch_loss(X1, p).backward()
    torch_loss(X2, p).backward()
    for ours, theirs in zip(net.params, p):
        assert_close(g.get_node_grad(ours), theirs.grad)

    g.clear_jacobi([net.w1])  # a subset
    assert g.get_node_grad(net.w1) is None
    assert_close(g.get_node_grad(net.w2), p[2].grad)
    g.clear_jacobi(net.b1)  # a single node (regression: it was iterated as if it were a list)
    assert g.get_node_grad(net.b1) is None
    assert_close(g.get_node_grad(net.w2), p[2].grad)

    g.clear_jacobi()
    assert all(g.get_node_grad(n) is None for n in net.params)

    net.run(X1)
    g.backward_nodes(net.params, net.loss)
    g.zero_grad()  # the alias
    assert all(g.get_node_grad(n) is None for n in net.params)


def test_same_backward_twice_with_retained_graph_doubles_the_gradient():
    net = Net()
    g = net.g
    net.run(X1)
    g.backward_nodes_ex(net.params, net.loss, retain_graph=True)
    g.backward_nodes_ex(net.params, net.loss, retain_graph=True)
    p = torch_params()
    loss = torch_loss(X1, p)
    loss.backward(retain_graph=True)
    loss.backward()
    for ours, theirs in zip(net.params, p):
        assert_close(g.get_node_grad(ours), theirs.grad)


# ---------------------------------------------------------------- release / retain_graph


def test_backward_releases_intermediates_and_keeps_leaves_and_loss():
    net = Net()
    g = net.g
    loss_value = net.run(X1)
    g.backward_nodes(net.params, net.loss)
    for name in net.intermediates:
        assert g.get_node_value(name) is None, f"{name} should have been released"
    for leaf in (net.x, net.w1, net.b1, net.w2, net.c, net.s):
        assert g.get_node_value(leaf) is not None, f"leaf {leaf.name} must be kept"
    assert float(g.get_node_value(net.loss)) == loss_value


def test_backward_through_released_values_raises_and_forward_recomputes():
    net = Net()
    g = net.g
    net.run(X1)
    g.backward_nodes(net.params, net.loss)
    first = g.get_node_grad(net.w1).copy()
    with pytest.raises(ot.ReleasedValueError) as info:
        g.backward_nodes(net.params, net.loss)
    assert isinstance(info.value, ot.GraphError)
    msg = str(info.value)
    assert "retain_graph=True" in msg and "forward_node" in msg
    assert any(f"'{name}'" in msg for name in net.intermediates), msg
    assert "'loss'" in msg
    # The failed backward accumulated nothing.
    assert np.array_equal(g.get_node_grad(net.w1), first)

    g.forward_node(net.loss)
    for name in net.intermediates:
        assert g.get_node_value(name) is not None
    g.backward_nodes(net.params, net.loss)
    assert_close(g.get_node_grad(net.w1), 2 * first)


def test_retain_graph_true_keeps_values_for_a_second_backward():
    net = Net()
    g = net.g
    net.run(X1)
    g.backward_nodes_ex(net.params, net.loss, retain_graph=True)
    held = {name: g.get_node_value(name) for name in net.intermediates}
    assert all(v is not None for v in held.values())
    first = {n: g.get_node_grad(n).copy() for n in net.params}
    g.clear_jacobi()
    g.forward_node(net.loss)  # nothing is stale: the held values are reused, not recomputed
    assert all(g.get_node_value(name) is held[name] for name in net.intermediates)
    g.backward_nodes_ex(net.params, net.loss, retain_graph=False)
    for n in net.params:
        assert np.array_equal(g.get_node_grad(n), first[n])
    # This second backward did not retain: now the values are gone.
    assert all(g.get_node_value(name) is None for name in net.intermediates)


def test_loss_released_by_an_earlier_backward_says_retain_graph():
    # Regression: when the loss itself had been released (it was on the path of an earlier backward of a
    # larger loss), the error did not mention retain_graph=True.
    net = Net()
    g = net.g
    other = g.mean(g.exp(net.out), name="other")
    total = g.add(net.loss, other, name="total")
    g.set_value(net.x, X1)
    g.forward_node(total)
    g.backward_nodes(net.params, total)
    assert g.get_node_value(net.loss) is None and g.get_node_value(total) is not None
    with pytest.raises(
        ot.ReleasedValueError,
        match=r"'loss'.*earlier backward of 'total'.*retain_graph=True.*forward_node\('loss'\)",
    ):
        g.backward_nodes(net.params, net.loss)


def test_release_values_error_points_to_forward_node():
    net = Net()
    g = net.g
    net.run(X1)
    g.release_values()
    assert all(g.get_node_value(name) is None for name in [*net.intermediates, "loss"])
    assert g.get_node_value(net.w1) is not None
    with pytest.raises(ot.ReleasedValueError, match=r"'loss'.*release_values\(\) released; run forward_node\('loss'\)"):
        g.backward_nodes(net.params, net.loss)
    net.run(X1)
    g.backward_nodes(net.params, net.loss)


def test_released_values_of_g_grad_raise_the_same_way():
    net = Net()
    g = net.g
    net.run(X1)
    g.grad(net.loss, net.w1)  # retain_graph defaults to False, as torch.autograd.grad
    with pytest.raises(ot.ReleasedValueError, match=r"earlier grad of 'loss'.*retain_graph=True"):
        g.grad(net.loss, net.w1)
    net.run(X1)
    first = g.grad(net.loss, net.w1, retain_graph=True)
    assert np.array_equal(g.grad(net.loss, net.w1), first)


# ---------------------------------------------------------------- no_grad, scalar, stale


def test_backward_under_no_grad_raises():
    net = Net()
    g = net.g
    net.run(X1)
    with g.no_grad():
        with pytest.raises(ot.GraphError, match=r"'loss'.*gradient tracking is off"):
            g.backward_nodes(net.params, net.loss)
        with pytest.raises(ot.GraphError, match=r"gradient tracking is off"):
            g.grad(net.loss, net.w1)
    assert all(g.get_node_grad(n) is None for n in net.params)
    g.backward_nodes(net.params, net.loss)  # outside the block it works


def test_backward_on_a_loss_computed_under_no_grad_raises():
    net = Net()
    g = net.g
    g.set_value(net.x, X1)
    g.no_grad_scope(lambda gg: gg.forward_node(net.loss))
    with pytest.raises(ot.GraphError, match=r"'loss'.*computed under no_grad.*forward_node\('loss'\)"):
        g.backward_nodes(net.params, net.loss)
    g.forward_node(net.loss)
    g.backward_nodes(net.params, net.loss)
    p = torch_params()
    torch_loss(X1, p).backward()
    assert_close(g.get_node_grad(net.w1), p[0].grad)


def test_non_scalar_loss_raises_naming_node_and_shape():
    net = Net()
    g = net.g
    net.run(X1)
    with pytest.raises(ot.GraphError, match=r"scalar.*'h'.*\(5, 4\)"):
        g.backward_nodes(net.params, net.h)


def test_loss_with_a_batch_axis_is_not_a_scalar_even_for_one_sample():
    # Regression: a (N,)-shaped loss fed a batch of one passed the size check, then crashed with a bare
    # TypeError while building the gradient seed.
    net = Net()
    g = net.g
    per_sample = g.sum(net.out, axis=1, name="per_sample")
    g.set_value(net.x, X1[:1])
    g.forward_node(per_sample)
    with pytest.raises(ot.GraphError, match=r"scalar.*'per_sample'.*\(N,\)"):
        g.backward_nodes(net.params, per_sample)
    with pytest.raises(ot.GraphError, match=r"scalar.*'per_sample'.*\(N,\)"):
        g.grad(per_sample, net.w1)
    net.run(X1)
    g.backward_nodes(net.params, net.loss)


def test_grad_with_create_graph_of_a_non_scalar_raises():
    # Regression: create_graph=True skipped the scalar check and crashed with a bare TypeError.
    net = Net()
    g = net.g
    with pytest.raises(ot.GraphError, match=r"grad needs a scalar.*'h'.*\(N, 4\)"):
        g.grad(net.h, net.w1, create_graph=True)
    net.run(X1)
    with pytest.raises(ot.GraphError, match=r"grad needs a scalar.*'h'.*\(5, 4\)"):
        g.grad(net.h, net.w1, create_graph=True)
    assert isinstance(g.grad(net.loss, net.w1, create_graph=True), ot.NodeId)


@pytest.mark.parametrize("change", ["input", "parameter", "state"])
def test_stale_loss_raises(change):
    net = Net()
    g = net.g
    net.run(X1)
    node, value, name = {
        "input": (net.x, X2, "x"),
        "parameter": (net.w1, W1 + 1.0, "w1"),
        "state": (net.s, S + 1.0, "s"),
    }[change]
    g.set_value(node, value)
    with pytest.raises(ot.StaleValueError, match=rf"'{name}'.*changed.*forward_node\('loss'\)"):
        g.backward_nodes(net.params, net.loss)
    assert all(g.get_node_grad(n) is None for n in net.params)
    g.forward_node(net.loss)
    g.backward_nodes(net.params, net.loss)
    assert g.get_node_grad(net.w1) is not None


def test_no_grad_forward_keeps_only_what_was_asked_for():
    net = Net()
    g = net.g
    g.set_value(net.x, X1)
    with g.no_grad():
        out, loss = g.forward_node([net.out, net.loss])
    assert all(g.get_node_value(name) is None for name in ["lin", "h", "hc", "mm", "sq"])
    assert g.get_node_value(net.out) is out and g.get_node_value(net.loss) is loss
    p = torch_params()
    assert_close(np.asarray(loss), torch_loss(X1, p))


def test_forward_with_tracking_on_restores_what_a_no_grad_forward_dropped():
    net = Net()
    g = net.g
    net.run(X1)
    g.set_value(net.x, X2)
    g.no_grad_scope(lambda gg: gg.forward_node(net.loss))  # drops the intermediates of the new batch
    net.run(X2)
    g.backward_nodes(net.params, net.loss)
    p = torch_params()
    torch_loss(X2, p).backward()
    for ours, theirs in zip(net.params, p):
        assert_close(g.get_node_grad(ours), theirs.grad)


# ---------------------------------------------------------------- unreachable targets


def test_unrelated_target_gets_no_gradient():
    net = Net()
    g = net.g
    u = g.parameter("u", value=np.ones(2))
    net.run(X1)
    g.backward_nodes_ex([*net.params, u], net.loss, retain_graph=True)
    assert g.get_node_grad(u) is None
    assert all(g.get_node_grad(n) is not None for n in net.params)
    with pytest.raises(ot.GraphError, match=r"parameter 'u' is not reachable from 'loss'.*allow_unused=True"):
        g.grad(net.loss, [net.w1, u])
    gw, gu = g.grad(net.loss, [net.w1, u], allow_unused=True)
    assert gu is None and isinstance(gw, np.ndarray)


@pytest.mark.parametrize("cut", ["detach_node", "stop_gradient"])
def test_target_cut_off_gets_no_gradient(cut):
    g = ot.Graph(dtype="float64")
    x = g.input("x", shape=(None, 3))
    w1 = g.parameter("w1", value=W1)
    w2 = g.parameter("w2", value=W2[:, 0])
    h = g.tanh(g.matmul(x, w1), name="h")
    if cut == "stop_gradient":
        h = g.stop_gradient(h, name="h_cut")
    else:
        g.detach_node(h)
    loss = g.sum(g.matmul(h, w2), name="loss")
    g.set_value(x, X1)
    g.forward_node(loss)
    g.backward_nodes_ex([w1, w2], loss, retain_graph=True)
    assert g.get_node_grad(w1) is None
    assert_close(g.get_node_grad(w2), np.tanh(X1 @ W1).sum(axis=0))
    with pytest.raises(ot.GraphError, match=r"parameter 'w1' is not reachable from 'loss'"):
        g.grad(loss, [w1, w2])
    assert g.grad(loss, [w1, w2], allow_unused=True)[0] is None


# ---------------------------------------------------------------- no_grad scopes and modes


def test_no_grad_scope_returns_result_and_restores_modes():
    g = ot.Graph()
    seen = {}

    def fn(gg):
        seen["grad"], seen["train"] = gg.is_grad_enabled(), gg.is_train_mode()
        return 42

    for start_train in (True, False):
        (g.set_train_mode if start_train else g.set_eval_mode)()
        assert g.no_grad_scope(fn) == 42
        assert seen == {"grad": False, "train": False}
        assert g.is_grad_enabled() and g.is_train_mode() == start_train


def test_no_grad_scope_restores_when_fn_raises():
    g = ot.Graph()

    def boom(gg):
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        g.no_grad_scope(boom)
    assert g.is_grad_enabled() and g.is_train_mode()
    with pytest.raises(ValueError, match="inside"), g.no_grad():
        raise ValueError("inside")
    assert g.is_grad_enabled() and g.is_train_mode()


def test_no_grad_nests_and_inner_restores_outer_state():
    g = ot.Graph()
    with g.no_grad(eval_mode=False):
        assert not g.is_grad_enabled() and g.is_train_mode()
        inner = g.no_grad_scope(lambda gg: (gg.is_grad_enabled(), gg.is_train_mode()))
        assert inner == (False, False)
        assert not g.is_grad_enabled() and g.is_train_mode()
        with g.no_grad():
            assert not g.is_grad_enabled() and not g.is_train_mode()
            assert g.no_grad_scope(lambda gg: gg.no_grad_scope(lambda g3: g3.is_train_mode())) is False
        assert not g.is_grad_enabled() and g.is_train_mode()
    assert g.is_grad_enabled() and g.is_train_mode()


def test_no_grad_context_manager_is_the_scope():
    g = ot.Graph()
    with g.no_grad() as gg:
        assert gg is g
        assert not g.is_grad_enabled() and not g.is_train_mode()
    assert g.is_grad_enabled() and g.is_train_mode()


def test_train_eval_mode_is_independent_of_grad_tracking():
    net = Net()
    g = net.g
    g.set_eval_mode()
    assert g.is_grad_enabled() and not g.is_train_mode()
    net.run(X1)
    g.backward_nodes(net.params, net.loss)  # eval mode does not turn gradients off
    assert g.get_node_grad(net.w1) is not None
    g.set_train_mode()
    assert g.is_grad_enabled() and g.is_train_mode()
    with g.no_grad(eval_mode=False):
        assert g.is_train_mode()
        g.set_eval_mode()
        assert not g.is_train_mode() and not g.is_grad_enabled()
    assert g.is_train_mode() and g.is_grad_enabled()


# ---------------------------------------------------------------- detach / attach


class Diamond:
    """a = tanh(x @ w); left = sin(a) * u; right = exp(a * v); loss = sum(left * right + left)."""

    def __init__(self) -> None:
        g = self.g = ot.Graph(dtype="float64")
        self.x = g.input("x", shape=(None, 3))
        self.w = g.parameter("w", value=W1)
        self.u = g.parameter("u", value=B1)
        self.v = g.parameter("v", value=C)
        a = g.tanh(g.matmul(self.x, self.w), name="a")
        self.left = g.mul(g.sin(a), self.u, name="left")
        self.right = g.exp(a * self.v, name="right")
        self.loss = g.sum(self.left * self.right + self.left, name="loss")
        g.set_value(self.x, X1)
        self.targets = [self.w, self.u, self.v, self.left]

    def grads(self) -> list[np.ndarray | None]:
        g = self.g
        g.clear_jacobi()
        g.forward_node(self.loss)
        g.backward_nodes(self.targets, self.loss)
        return [g.get_node_grad(t) for t in self.targets]


def torch_diamond(detach_left: bool) -> list[torch.Tensor | None]:
    w, u, v = tt(W1, True), tt(B1, True), tt(C, True)
    a = torch.tanh(tt(X1) @ w)
    left = torch.sin(a) * u
    if detach_left:
        left = left.detach().requires_grad_(True)
    left.retain_grad()
    right = torch.exp(a * v)
    (left * right + left).sum().backward()
    return [w.grad, u.grad, v.grad, left.grad]


def test_detached_branch_of_a_diamond_passes_only_the_other_branch():
    d = Diamond()
    g = d.g
    assert not g.is_node_detached(d.left)
    held = g.forward_node(d.left)
    g.detach_node(d.left)
    assert g.is_node_detached(d.left)
    # Detaching keeps the value and does not make anything stale.
    assert g.get_node_value(d.left) is held
    g.forward_node(d.loss)
    assert g.get_node_value(d.left) is held
    w, u, v, left = d.grads()
    tw, tu, tv, tleft = torch_diamond(detach_left=True)
    assert_close(w, tw)
    assert_close(v, tv)
    assert u is None and tu is None  # u feeds only the detached branch
    assert_close(left, tleft)  # the detached node itself is still a target

    g.attach_node(d.left)
    assert not g.is_node_detached(d.left)
    w, u, v, left = d.grads()
    for ours, theirs in zip((w, u, v, left), torch_diamond(detach_left=False)):
        assert_close(ours, theirs)


def test_backward_plans_are_cached_per_detach_set():
    d = Diamond()
    g = d.g
    d.grads()
    g.detach_node(d.left)
    d.grads()
    g.attach_node(d.left)
    d.grads()
    count = len(g.nodes(include_hidden=True))
    for _ in range(3):
        g.detach_node(d.left)
        d.grads()
        g.attach_node(d.left)
        d.grads()
    assert len(g.nodes(include_hidden=True)) == count
    assert len(g.nodes()) < count  # the gradient nodes are hidden


# ---------------------------------------------------------------- forward recomputes only what is stale


def test_forward_recomputes_only_stale_values():
    g = ot.Graph(dtype="float64")
    x = g.input("x", shape=(None, 3))
    z = g.input("z", shape=(None, 3))
    a = g.tanh(x, name="a")
    b = g.exp(z, name="b")
    y = g.sum(a * b, name="y")
    g.set_value(x, X1)
    g.set_value(z, X2)
    g.forward_node(y)
    before = {n: g.get_node_value(n) for n in (a, b, y)}
    g.forward_node(y)
    assert all(g.get_node_value(n) is v for n, v in before.items())
    g.set_value(z, X1)
    g.forward_node(y)
    assert g.get_node_value(a) is before[a]
    assert g.get_node_value(b) is not before[b]
    assert g.get_node_value(y) is not before[y]
    assert np.isclose(g.get_node_value(y), np.sum(np.tanh(X1) * np.exp(X1)))


def test_each_node_computed_once_per_forward_in_a_diamond(monkeypatch):
    g = ot.Graph(dtype="float64")
    x = g.input("x", shape=(None, 3))
    a = g.tanh(x, name="a")
    b = g.sin(a, name="b")
    c = g.cos(a, name="c")
    d = g.mul(b, c, name="d")
    y = g.sum(d + a, name="y")
    counts: dict[str, int] = {}

    def counting(op):
        real = op.forward

        def forward(*args, **attrs):
            counts[op.name] = counts.get(op.name, 0) + 1
            return real(*args, **attrs)

        return forward

    # Each op appears once in this graph, so counting calls per op counts them per node.
    for name in ("tanh", "sin", "cos", "mul", "add", "sum"):
        monkeypatch.setattr(REGISTRY[name], "forward", counting(REGISTRY[name]))
    g.set_value(x, X1)
    g.forward_node([y, d, b])
    assert counts and all(v == 1 for v in counts.values()), counts
    assert {"tanh", "sin", "cos", "mul", "add", "sum"} <= counts.keys()
    counts.clear()
    g.forward_node(y)
    assert counts == {}


# ---------------------------------------------------------------- g.grad


def test_grad_returns_arrays_and_does_not_accumulate():
    net = Net()
    g = net.g
    net.run(X1)
    grads = g.grad(net.loss, net.params)
    assert all(type(v) is np.ndarray for v in grads)
    assert all(g.get_node_grad(n) is None for n in net.params)
    p = torch_params()
    torch_loss(X1, p).backward()
    for ours, theirs in zip(grads, p):
        assert_close(ours, theirs.grad)


def test_grad_of_a_single_node_returns_one_array():
    net = Net()
    g = net.g
    net.run(X1)
    gw = g.grad(net.loss, net.w1)
    p = torch_params()
    torch_loss(X1, p).backward()
    assert_close(gw, p[0].grad)


def test_grad_with_create_graph_returns_nodes_that_differentiate_again():
    net = Net()
    g = net.g
    net.run(X1)
    gw1, gw2 = g.grad(net.loss, [net.w1, net.w2], create_graph=True)
    assert isinstance(gw1, ot.NodeId) and gw1.shape == (3, 4)
    penalty = g.add(g.sum(gw1 * gw1), g.sum(gw2 * gw2), name="penalty")
    g.forward_node(penalty)
    p = torch_params()
    tg1, tg2 = torch.autograd.grad(torch_loss(X1, p), [p[0], p[2]], create_graph=True)
    assert_close(g.get_node_value(gw1), tg1)
    assert_close(g.get_node_value(gw2), tg2)
    tpen = (tg1 * tg1).sum() + (tg2 * tg2).sum()
    assert_close(g.get_node_value(penalty), tpen)

    g.backward_nodes(net.params, penalty)
    tpen.backward()
    for ours, theirs in zip(net.params, p):
        assert_close(g.get_node_grad(ours), theirs.grad)


# ---------------------------------------------------------------- train / eval layers


def test_dropout_zeroes_about_p_in_train_mode_and_is_identity_in_eval():
    g = ot.Graph(dtype="float64", seed=3)
    x = g.input("x", shape=(None,))
    y = g.dropout(x, p=0.3, name="drop")
    ones = np.ones(20000)
    g.set_value(x, ones)
    out = g.forward_node(y)
    zero_fraction = np.mean(out == 0)
    assert abs(zero_fraction - 0.3) < 0.02, zero_fraction
    assert np.allclose(out[out != 0], 1 / 0.7)
    g.set_eval_mode()
    assert np.array_equal(g.forward_node(y), ones)
    g.set_train_mode()
    assert np.mean(g.forward_node(y) == 0) > 0.25
    assert np.array_equal(g.no_grad_scope(lambda gg: gg.forward_node(y)), ones)


def test_batch_norm_train_and_eval_match_torch():
    rng = np.random.default_rng(7)
    gamma0, beta0 = rng.normal(size=4), rng.normal(size=4)
    g = ot.Graph(dtype="float64")
    x = g.input("x", shape=(None, 4))
    gamma = g.parameter("gamma", value=gamma0)
    beta = g.parameter("beta", value=beta0)
    rm = g.state("rm", shape=(4,), init="zeros")
    rv = g.state("rv", shape=(4,), init="ones")
    y = g.batch_norm(x, gamma, beta, rm, rv, momentum=0.1, eps=1e-5, name="bn")
    loss = g.sum(g.sin(y), name="loss")

    bn = torch.nn.BatchNorm1d(4, momentum=0.1, eps=1e-5, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(tt(gamma0))
        bn.bias.copy_(tt(beta0))
    for step in range(3):
        xs = rng.normal(loc=step, scale=1 + step, size=(8, 4))
        g.set_value(x, xs)
        g.forward_node(loss)
        g.backward_nodes_ex([gamma, beta], loss, retain_graph=True)
        bn.zero_grad()
        xt = tt(xs)
        out = bn(xt)
        torch.sin(out).sum().backward()
        assert_close(g.get_node_value(y), out)
        assert_close(g.get_node_value(rm), bn.running_mean)
        assert_close(g.get_node_value(rv), bn.running_var)
        assert_close(g.get_node_grad(gamma), bn.weight.grad)
        assert_close(g.get_node_grad(beta), bn.bias.grad)
        g.clear_jacobi()

    bn.eval()
    xs = rng.normal(size=(5, 4))
    g.set_value(x, xs)
    with torch.no_grad():
        expected = bn(tt(xs))
    stats = (g.get_node_value(rm).copy(), g.get_node_value(rv).copy())
    # no_grad_scope switches to eval mode: running statistics, and they do not move.
    assert_close(g.no_grad_scope(lambda gg: gg.forward_node(y)), expected)
    assert np.array_equal(g.get_node_value(rm), stats[0]) and np.array_equal(g.get_node_value(rv), stats[1])
    g.set_eval_mode()
    assert_close(g.forward_node(y), expected)
    g.set_train_mode()
    with torch.no_grad():
        bn.train()
        train_out = bn(tt(xs))
    assert_close(g.forward_node(y), train_out)


# ---------------------------------------------------------------- anomaly detection


def test_anomaly_detection_names_the_first_nonfinite_node():
    g = ot.Graph(dtype="float64")
    x = g.input("x", shape=(None,))
    w = g.parameter("w", value=np.array([1.0, 1.0, 1.0]))
    lg = g.log(x * w, name="logx")
    loss = g.sum(g.exp(lg) + 1.0, name="loss")
    g.set_value(x, np.array([1.0, -2.0, 3.0]))

    value = g.forward_node(loss)  # no anomaly detection: NaN propagates, no error
    assert np.isnan(value)
    first = g.first_nonfinite(loss)
    assert first is not None and first.name == "logx"

    g.set_anomaly_detection(True)
    g.set_value(x, np.array([1.0, -2.0, 4.0]))
    with pytest.raises(ot.NonFiniteError, match=r"'logx'.*NaN") as info:
        g.forward_node(loss)
    assert info.value.node_name == "logx"
    g.set_value(x, np.array([1.0, 2.0, 4.0]))
    assert np.isclose(g.forward_node(loss), 10.0)
    assert g.first_nonfinite(loss) is None


def test_anomaly_in_backward_names_the_forward_node():
    # Regression: a non-finite gradient was reported under the name of an internal gradient node
    # ("node 'div_11' (div) ... from finite inputs ('expand_8', 'mul_10')"), which the user never made.
    g = ot.Graph(dtype="float64")
    x = g.input("x", shape=(None,))
    w = g.parameter("w", value=np.array([1.0, 1.0]))
    q = g.parameter("q", value=np.array([1.0, 1.0]))
    root = g.sqrt(x * w, name="root")
    loss = g.sum(root + q, name="loss")
    g.set_value(x, np.array([0.0, 1.0]))  # sqrt is finite at 0, its derivative is not
    g.forward_node(loss)
    g.set_anomaly_detection(True)
    with pytest.raises(ot.NonFiniteError, match=r"gradient through node 'root' \(sqrt\).*infinity") as info:
        g.backward_nodes_ex([q, w], loss, retain_graph=True)
    assert info.value.node_name == "root"
    assert g.get_node_grad(q) is None and g.get_node_grad(w) is None  # nothing half-accumulated
    g.backward_nodes([q], loss)  # the graph is still usable
    assert np.array_equal(g.get_node_grad(q), [1.0, 1.0])
