"""The seed's training patterns (GAN, actor-critic, multi-task, higher order, WGAN-GP, truncated BPTT,
target networks), each written with the Python API and run side by side with the same computation in
PyTorch (float64, plain SGD by hand on both sides) for several iterations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import onlytorch as ot

TOL = 1e-10


def tt(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def assert_close(ours: np.ndarray | None, theirs: torch.Tensor | np.ndarray | None, what: str = "") -> None:
    assert ours is not None, f"{what}: no value/gradient on our side"
    assert theirs is not None, f"{what}: no value/gradient on torch's side"
    ref = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs {ref.shape}"
    err = float(np.max(np.abs(ours - ref))) if ours.size else 0.0
    assert err < TOL, f"{what}: max abs difference {err:.3g}"


class Twin:
    """Parameters created with the same values in a Graph and as torch leaf tensors."""

    def __init__(self, g: ot.Graph, rng: np.random.Generator) -> None:
        self.g = g
        self.rng = rng
        self.ours: dict[str, ot.NodeId] = {}
        self.theirs: dict[str, torch.Tensor] = {}

    def param(self, name: str, shape: tuple[int, ...], scale: float = 0.5) -> tuple[ot.NodeId, torch.Tensor]:
        value = self.rng.normal(scale=scale, size=shape)
        self.ours[name] = self.g.parameter(name, value=value)
        self.theirs[name] = tt(value, grad=True)
        return self.ours[name], self.theirs[name]

    def mlp(self, prefix: str, sizes: Sequence[int]) -> list[str]:
        names = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            for part, shape in (("w", (n_in, n_out)), ("b", (n_out,))):
                self.param(f"{prefix}.{part}{i}", shape)
                names.append(f"{prefix}.{part}{i}")
        return names

    def apply_ours(self, names: list[str], x: ot.NodeId, name: str | None = None) -> ot.NodeId:
        g, h = self.g, x
        layers = len(names) // 2
        for i in range(layers):
            last = i == layers - 1
            h = g.linear(h, self.ours[names[2 * i]], self.ours[names[2 * i + 1]], name=name if last else None)
            if not last:
                h = g.tanh(h)
        return h

    def apply_theirs(self, names: list[str], x: torch.Tensor) -> torch.Tensor:
        h = x
        layers = len(names) // 2
        for i in range(layers):
            h = h @ self.theirs[names[2 * i]] + self.theirs[names[2 * i + 1]]
            if i < layers - 1:
                h = torch.tanh(h)
        return h

    def nodes(self, names: list[str]) -> list[ot.NodeId]:
        return [self.ours[n] for n in names]

    def sgd(self, names: list[str], lr: float) -> None:
        """One plain SGD step on both sides (skipping parameters without a gradient), then clear
        every gradient on both sides."""
        g = self.g
        for n in names:
            grad = g.get_node_grad(self.ours[n])
            if grad is not None:
                g.set_value(self.ours[n], g.get_node_value(self.ours[n]) - lr * grad)
            t = self.theirs[n]
            if t.grad is not None:
                with torch.no_grad():
                    t -= lr * t.grad
        self.zero_grad()

    def zero_grad(self) -> None:
        self.g.clear_jacobi()
        for t in self.theirs.values():
            t.grad = None

    def assert_grads(self, names: list[str], what: str) -> None:
        for n in names:
            assert_close(self.g.get_node_grad(self.ours[n]), self.theirs[n].grad, f"{what}: gradient of {n}")

    def assert_params(self, names: list[str] | None = None) -> None:
        for n in names if names is not None else list(self.ours):
            assert_close(self.g.get_node_value(self.ours[n]), self.theirs[n], f"parameter {n}")


# ---------------------------------------------------------------- GAN (seed §4)


def test_gan_loop_with_detach_and_attach():
    rng = np.random.default_rng(0)
    g = ot.Graph(dtype="float64")
    tw = Twin(g, rng)
    G = tw.mlp("G", [3, 8, 2])
    D = tw.mlp("D", [2, 8, 1])
    z = g.input("z", shape=(None, 3))
    real = g.input("real", shape=(None, 2))
    fake = tw.apply_ours(G, z, name="fake")
    d_real = tw.apply_ours(D, real)
    d_fake = tw.apply_ours(D, fake)
    d_loss = g.add(g.bce_with_logits(d_real, 1.0), g.bce_with_logits(d_fake, 0.0), name="d_loss")
    g_loss = g.bce_with_logits(d_fake, 1.0, name="g_loss")
    lr = 0.1

    for it in range(6):
        Z = rng.normal(size=(16, 3))
        R = rng.normal(size=(16, 2)) + np.array([2.0, -1.0])
        g.set_value(z, Z)
        g.set_value(real, R)
        zt, rt = tt(Z), tt(R)

        # Discriminator step: fake is detached, so D's loss cannot reach G.
        g.detach_node(fake)
        g.forward_node(d_loss)
        g.backward_nodes(tw.nodes(D + G), d_loss)
        assert all(g.get_node_grad(p) is None for p in tw.nodes(G)), "G received a gradient in the D step"
        fake_t = tw.apply_theirs(G, zt).detach()
        d_real_t, d_fake_t = tw.apply_theirs(D, rt), tw.apply_theirs(D, fake_t)
        d_loss_t = F.binary_cross_entropy_with_logits(
            d_real_t, torch.ones_like(d_real_t)
        ) + F.binary_cross_entropy_with_logits(d_fake_t, torch.zeros_like(d_fake_t))
        d_loss_t.backward()
        assert_close(g.get_node_value(d_loss), d_loss_t, f"iteration {it}: d_loss")
        tw.assert_grads(D, f"iteration {it}, D step")
        assert all(tw.theirs[n].grad is None for n in G)
        tw.sgd(D, lr)

        # Generator step: attach restores the flow; forward again after D's update.
        g.attach_node(fake)
        d_before = {n: g.get_node_value(tw.ours[n]).copy() for n in D}
        g.forward_node(g_loss)
        g.backward_nodes(tw.nodes(G + D), g_loss)
        assert all(g.get_node_grad(p) is not None for p in tw.nodes(D))  # computed, but not applied
        d_fake_t = tw.apply_theirs(D, tw.apply_theirs(G, zt))
        g_loss_t = F.binary_cross_entropy_with_logits(d_fake_t, torch.ones_like(d_fake_t))
        g_loss_t.backward()
        assert_close(g.get_node_value(g_loss), g_loss_t, f"iteration {it}: g_loss")
        tw.assert_grads(G + D, f"iteration {it}, G step")
        tw.sgd(G, lr)
        assert all(np.array_equal(g.get_node_value(tw.ours[n]), d_before[n]) for n in D)
        assert all(g.get_node_grad(p) is None for p in tw.nodes(D))  # cleared, never applied
        tw.assert_params()


# ---------------------------------------------------------------- actor-critic


def test_actor_critic_with_detached_value_and_shared_backbone():
    rng = np.random.default_rng(1)
    g = ot.Graph(dtype="float64")
    tw = Twin(g, rng)
    backbone = tw.mlp("body", [4, 8])
    actor = tw.mlp("actor", [8, 3])
    critic = tw.mlp("critic", [8, 1])
    obs = g.input("obs", shape=(None, 4))
    actions = g.input("actions", shape=(None,), dtype="int64")
    returns = g.input("returns", shape=(None,))
    h = g.tanh(tw.apply_ours(backbone, obs), name="features")
    logp = g.log_softmax(tw.apply_ours(actor, h), axis=-1)
    logp_a = g.reshape(g.take_along(logp, g.reshape(actions, shape=(-1, 1)), axis=1), shape=(-1,))
    value = g.reshape(tw.apply_ours(critic, h), shape=(-1,), name="value")
    advantage = g.sub(returns, g.stop_gradient(value), name="advantage")
    actor_loss = g.neg(g.mean(logp_a * advantage), name="actor_loss")
    critic_loss = g.mse(value, returns, name="critic_loss")
    lr = 0.05

    for it in range(5):
        obs_v = rng.normal(size=(12, 4))
        A = rng.integers(0, 3, size=12)
        Ret = rng.normal(size=12)
        for node, v in ((obs, obs_v), (actions, A), (returns, Ret)):
            g.set_value(node, v)
        g.forward_node([actor_loss, critic_loss])
        g.backward_nodes_ex(tw.nodes(backbone + actor + critic), actor_loss, retain_graph=True)
        assert all(g.get_node_grad(p) is None for p in tw.nodes(critic)), "the actor loss reached the critic"
        g.backward_nodes_ex(tw.nodes(backbone + critic), critic_loss, retain_graph=False)

        ht = torch.tanh(tw.apply_theirs(backbone, tt(obs_v)))
        logp_t = torch.log_softmax(tw.apply_theirs(actor, ht), dim=-1)
        logp_a_t = logp_t.gather(1, torch.tensor(A).reshape(-1, 1)).reshape(-1)
        value_t = tw.apply_theirs(critic, ht).reshape(-1)
        actor_loss_t = -(logp_a_t * (tt(Ret) - value_t.detach())).mean()
        critic_loss_t = F.mse_loss(value_t, tt(Ret))
        actor_loss_t.backward(retain_graph=True)
        critic_loss_t.backward()
        assert_close(g.get_node_value(actor_loss), actor_loss_t, "actor loss")
        assert_close(g.get_node_value(critic_loss), critic_loss_t, "critic loss")
        tw.assert_grads(backbone + actor + critic, f"iteration {it}")
        tw.sgd(backbone + actor + critic, lr)
        tw.assert_params()


# ---------------------------------------------------------------- multi-task


class MultiTask:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        g = self.g = ot.Graph(dtype="float64")
        tw = self.tw = Twin(g, self.rng)
        self.backbone = tw.mlp("backbone", [4, 6])
        self.cls_head = tw.mlp("cls", [6, 3])
        self.reg_head = tw.mlp("reg", [6, 2])
        self.x = g.input("x", shape=(None, 4))
        self.labels = g.input("labels", shape=(None,), dtype="int64")
        self.targets = g.input("targets", shape=(None, 2))
        h = g.tanh(tw.apply_ours(self.backbone, self.x), name="shared")
        self.cls_loss = g.cross_entropy(tw.apply_ours(self.cls_head, h), self.labels, name="cls_loss")
        self.reg_loss = g.mse(tw.apply_ours(self.reg_head, h), self.targets, name="reg_loss")

    def feed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X, L, T = self.rng.normal(size=(10, 4)), self.rng.integers(0, 3, size=10), self.rng.normal(size=(10, 2))
        for node, v in ((self.x, X), (self.labels, L), (self.targets, T)):
            self.g.set_value(node, v)
        self.g.forward_node([self.cls_loss, self.reg_loss])
        return X, L, T


def test_multi_task_backbone_receives_the_sum_of_both_losses():
    mt = MultiTask(2)
    g, tw = mt.g, mt.tw
    for it in range(5):
        X, L, T = mt.feed()
        g.backward_nodes_ex(tw.nodes(mt.backbone + mt.cls_head), mt.cls_loss, True)
        cls_only = {n: g.get_node_grad(tw.ours[n]).copy() for n in mt.backbone}
        g.backward_nodes_ex(tw.nodes(mt.backbone + mt.reg_head), mt.reg_loss, False)

        ht = torch.tanh(tw.apply_theirs(mt.backbone, tt(X)))
        cls_t = F.cross_entropy(tw.apply_theirs(mt.cls_head, ht), torch.tensor(L))
        reg_t = F.mse_loss(tw.apply_theirs(mt.reg_head, ht), tt(T))
        cls_t.backward(retain_graph=True)
        for n in mt.backbone:
            assert_close(cls_only[n], tw.theirs[n].grad, f"{n} after the classification backward")
        reg_t.backward()
        tw.assert_grads(mt.backbone + mt.cls_head + mt.reg_head, f"iteration {it}")
        assert not np.allclose(g.get_node_grad(tw.ours["backbone.w0"]), cls_only["backbone.w0"])
        tw.sgd(mt.backbone + mt.cls_head + mt.reg_head, 0.1)
        tw.assert_params()


def test_multi_task_second_backward_without_retain_raises():
    mt = MultiTask(3)
    g, tw = mt.g, mt.tw
    mt.feed()
    g.backward_nodes_ex(tw.nodes(mt.backbone + mt.cls_head), mt.cls_loss, False)
    with pytest.raises(ot.ReleasedValueError, match=r"'shared'.*'cls_loss'.*retain_graph=True.*forward_node"):
        g.backward_nodes_ex(tw.nodes(mt.backbone + mt.reg_head), mt.reg_loss, False)
    # forward_node recomputes what was released; the reg backward then adds its share.
    g.forward_node(mt.reg_loss)
    g.backward_nodes_ex(tw.nodes(mt.backbone + mt.reg_head), mt.reg_loss, False)
    assert g.get_node_grad(tw.ours["reg.w0"]) is not None


# ---------------------------------------------------------------- higher order


def f_ours(g: ot.Graph, x: ot.NodeId) -> ot.NodeId:
    return g.sum(g.sin(x) * x * x) + g.sum(x) ** 3 + g.sum(g.exp(x[:2] * x[1:]))


def f_theirs(x: torch.Tensor) -> torch.Tensor:
    return (torch.sin(x) * x * x).sum() + x.sum() ** 3 + torch.exp(x[:2] * x[1:]).sum()


X0 = np.array([0.3, -0.7, 1.1])


def test_full_hessian_from_grad_of_grad():
    g = ot.Graph(dtype="float64")
    x = g.parameter("x", value=X0)
    f = f_ours(g, x)
    g.forward_node(f)
    gx = g.grad(f, x, create_graph=True)
    xt = tt(X0, True)
    assert_close(g.get_node_value(gx), torch.autograd.grad(f_theirs(xt), xt)[0], "gradient")
    rows = []
    for i in range(3):
        gi = gx[i]
        g.forward_node(gi)
        rows.append(g.grad(gi, x, retain_graph=True))
    hessian = np.stack(rows)
    expected = torch.autograd.functional.hessian(f_theirs, tt(X0))
    assert_close(hessian, expected, "Hessian")
    assert np.allclose(hessian, hessian.T, atol=1e-12)
    assert g.get_node_grad(x) is None  # g.grad accumulates nothing


def test_hessian_vector_product():
    v0 = np.array([1.0, -2.0, 0.5])
    g = ot.Graph(dtype="float64")
    x = g.parameter("x", value=X0)
    v = g.constant(v0, name="v")
    f = f_ours(g, x)
    gx = g.grad(f, x, create_graph=True)
    gv = g.sum(gx * v, name="gv")
    g.forward_node(gv)
    hv = g.grad(gv, x)

    xt = tt(X0, True)
    (gxt,) = torch.autograd.grad(f_theirs(xt), xt, create_graph=True)
    (gxt * tt(v0)).sum().backward()
    assert_close(hv, xt.grad, "Hessian-vector product")
    # And accumulated, through backward_nodes, as a loss of its own.
    g.forward_node(gv)
    g.backward_nodes([x], gv)
    assert_close(g.get_node_grad(x), xt.grad, "accumulated Hessian-vector product")


# ---------------------------------------------------------------- WGAN-GP


def test_wgan_gp_critic_gradient_is_a_gradient_of_a_gradient():
    rng = np.random.default_rng(4)
    g = ot.Graph(dtype="float64")
    tw = Twin(g, rng)
    D = tw.mlp("D", [2, 8, 8, 1])
    real = g.input("real", shape=(None, 2))
    fake = g.input("fake", shape=(None, 2))
    eps = g.input("eps", shape=(None, 1))
    x_hat = g.add(eps * real, (1.0 - eps) * fake, name="x_hat")
    grad_hat = g.grad(g.sum(tw.apply_ours(D, x_hat)), x_hat, create_graph=True)
    gp = g.mean((g.norm(grad_hat, axis=1) - 1.0) ** 2, name="gp")
    critic_loss = g.add(g.mean(tw.apply_ours(D, fake)) - g.mean(tw.apply_ours(D, real)), 10.0 * gp, name="critic_loss")

    for it in range(4):
        R, Fk, E = rng.normal(size=(8, 2)) + 1.0, rng.normal(size=(8, 2)), rng.uniform(size=(8, 1))
        for node, v in ((real, R), (fake, Fk), (eps, E)):
            g.set_value(node, v)
        g.forward_node(critic_loss)
        xh = (tt(E) * tt(R) + (1 - tt(E)) * tt(Fk)).requires_grad_(True)
        (gh,) = torch.autograd.grad(tw.apply_theirs(D, xh).sum(), xh, create_graph=True)
        gp_t = ((gh.norm(dim=1) - 1) ** 2).mean()
        loss_t = tw.apply_theirs(D, tt(Fk)).mean() - tw.apply_theirs(D, tt(R)).mean() + 10 * gp_t
        assert_close(g.get_node_value(gp), gp_t, f"iteration {it}: gradient penalty")
        assert_close(g.get_node_value(critic_loss), loss_t, f"iteration {it}: critic loss")
        g.backward_nodes(tw.nodes(D), critic_loss)
        loss_t.backward()
        tw.assert_grads(D, f"iteration {it}")
        tw.sgd(D, 0.05)
        tw.assert_params()


# ---------------------------------------------------------------- truncated BPTT


@pytest.mark.parametrize("carry", ["input", "state"])
def test_truncated_bptt_carries_the_hidden_state_without_a_gradient(carry):
    rng = np.random.default_rng(5)
    batch, n_in, n_hidden, window, windows = 3, 2, 4, 5, 3
    g = ot.Graph(dtype="float64")
    tw = Twin(g, rng)
    wx, _ = tw.param("Wx", (n_in, n_hidden))
    wh, _ = tw.param("Wh", (n_hidden, n_hidden))
    b, _ = tw.param("b", (n_hidden,))
    wo, _ = tw.param("Wo", (n_hidden, 1))
    names = ["Wx", "Wh", "b", "Wo"]
    if carry == "input":
        h_in = g.input("h_in", shape=(None, n_hidden))
    else:
        h_in = g.state("h_in", shape=(batch, n_hidden), init="zeros")
    xs = [g.input(f"x{t}", shape=(None, n_in)) for t in range(window)]
    ys = [g.input(f"y{t}", shape=(None, 1)) for t in range(window)]
    h, losses = h_in, []
    for t in range(window):
        h = g.tanh(g.matmul(xs[t], wx) + g.matmul(h, wh) + b, name=f"h{t}")
        losses.append(g.mse(g.matmul(h, wo), ys[t]))
    loss = g.mean(g.stack(*losses), name="loss")
    h_last = h

    seq_x = rng.normal(size=(window * windows, batch, n_in))
    seq_y = rng.normal(size=(window * windows, batch, 1))
    carried = np.zeros((batch, n_hidden))
    ht = torch.zeros(batch, n_hidden, dtype=torch.float64)
    for k in range(windows):
        g.set_value(h_in, carried)
        for t in range(window):
            g.set_value(xs[t], seq_x[k * window + t])
            g.set_value(ys[t], seq_y[k * window + t])
        _, last = g.forward_node([loss, h_last])
        carried = last.copy()  # read before backward releases it
        g.backward_nodes(tw.nodes(names) + [h_in], loss)

        ht = ht.detach().requires_grad_(True)
        start, losses_t = ht, []
        for t in range(window):
            ht = torch.tanh(tt(seq_x[k * window + t]) @ tw.theirs["Wx"] + ht @ tw.theirs["Wh"] + tw.theirs["b"])
            losses_t.append(F.mse_loss(ht @ tw.theirs["Wo"], tt(seq_y[k * window + t])))
        loss_t = torch.stack(losses_t).mean()
        loss_t.backward()
        assert_close(g.get_node_value(loss), loss_t, f"window {k}: loss")
        assert_close(carried, ht, f"window {k}: carried hidden state")
        tw.assert_grads(names, f"window {k}")
        # The carried state gets the gradient of this window only; nothing flows further back.
        assert_close(g.get_node_grad(h_in), start.grad, f"window {k}: gradient at the carried state")
        tw.sgd(names, 0.1)
        tw.assert_params()


# ---------------------------------------------------------------- target network


def test_target_network_gets_no_gradient_and_syncs_every_k_steps():
    rng = np.random.default_rng(6)
    g = ot.Graph(dtype="float64")
    tw = Twin(g, rng)
    Q = tw.mlp("Q", [4, 8, 3])
    Qt = []
    for n in Q:  # separate parameters with the same initial values
        name = "Q_target" + n[1:]
        value = g.get_node_value(tw.ours[n])
        tw.ours[name] = g.parameter(name, value=value)
        tw.theirs[name] = tt(value, grad=True)
        Qt.append(name)
    s = g.input("s", shape=(None, 4))
    a = g.input("a", shape=(None,), dtype="int64")
    r = g.input("r", shape=(None,))
    s2 = g.input("s2", shape=(None, 4))
    q_sa = g.reshape(g.take_along(tw.apply_ours(Q, s), g.reshape(a, shape=(-1, 1)), axis=1), shape=(-1,))
    td_target = r + 0.99 * g.stop_gradient(g.max(tw.apply_ours(Qt, s2), axis=1))
    loss = g.mse(q_sa, td_target, name="td_loss")
    K = 3

    for step in range(8):
        S, A, Rw, S2 = (
            rng.normal(size=(16, 4)),
            rng.integers(0, 3, size=16),
            rng.normal(size=16),
            rng.normal(size=(16, 4)),
        )
        for node, v in ((s, S), (a, A), (r, Rw), (s2, S2)):
            g.set_value(node, v)
        g.forward_node(loss)
        g.backward_nodes(tw.nodes(Q + Qt), loss)
        assert all(g.get_node_grad(p) is None for p in tw.nodes(Qt)), "the target network received a gradient"

        q_sa_t = tw.apply_theirs(Q, tt(S)).gather(1, torch.tensor(A).reshape(-1, 1)).reshape(-1)
        target_t = tt(Rw) + 0.99 * tw.apply_theirs(Qt, tt(S2)).max(dim=1).values.detach()
        loss_t = F.mse_loss(q_sa_t, target_t)
        loss_t.backward()
        assert_close(g.get_node_value(loss), loss_t, f"step {step}: loss")
        tw.assert_grads(Q, f"step {step}")
        assert all(tw.theirs[n].grad is None for n in Qt)
        tw.sgd(Q + Qt, 0.05)
        if (step + 1) % K == 0:
            for online, target in zip(Q, Qt):
                g.set_value(tw.ours[target], g.get_node_value(tw.ours[online]))
                with torch.no_grad():
                    tw.theirs[target].copy_(tw.theirs[online])
        tw.assert_params()
        in_sync = all(np.array_equal(g.get_node_value(tw.ours[o]), g.get_node_value(tw.ours[t])) for o, t in zip(Q, Qt))
        assert in_sync == ((step + 1) % K == 0)
