"""The categorical ops and ppo_clip beyond the torch case tables (tests/ops/cases_distributions.py):
sampling (seeding, frequencies, extreme logits, no gradient), -inf logits, misuse messages, and
the DQN target and action-value pick built from existing ops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Categorical

import onlytorch as ot


def _sampler(logits: np.ndarray, seed: int = 0, dtype: str = "float64"):
    g = ot.Graph(seed=seed, dtype=dtype)
    x = g.input("logits", (None, logits.shape[-1]))
    g.set_value(x, logits.astype(dtype))
    return g, x, g.categorical_sample(x, name="action")


# ---------------------------------------------------------------- categorical_sample


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sample_is_int64_shaped_like_logits_without_the_class_axis(dtype):
    g, _, s = _sampler(np.zeros((7, 3)), dtype=dtype)
    assert s.shape == (None,) and s.dtype == np.int64
    out = g.forward_node(s)
    assert out.shape == (7,) and out.dtype == np.int64
    assert ((out >= 0) & (out < 3)).all()
    g3 = ot.Graph(seed=0)
    z = g3.constant(np.zeros((2, 5, 4)))
    assert g3.forward_node(g3.categorical_sample(z)).shape == (2, 5)


def test_same_seed_same_draws_and_a_new_draw_when_logits_change():
    logits = np.random.default_rng(3).standard_normal((50, 4))
    runs = []
    for _ in range(2):
        g, x, s = _sampler(logits, seed=11)
        first = g.forward_node(s).copy()
        assert np.array_equal(g.forward_node(s), first)  # nothing changed: the value is kept
        g.set_value(x, logits)
        second = g.forward_node(s).copy()
        runs.append((first, second))
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][0], runs[0][1])  # set_value makes a fresh draw
    g, _, s = _sampler(logits, seed=12)
    assert not np.array_equal(g.forward_node(s), runs[0][0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sample_frequencies_match_softmax(dtype):
    logits = np.array([1.0, 0.0, -1.0, 2.5, -3.0])
    p = np.exp(logits) / np.exp(logits).sum()
    n = 40_000
    g, x, s = _sampler(np.tile(logits, (n // 2, 1)), seed=5, dtype=dtype)
    draws = [g.forward_node(s).copy()]
    g.set_value(x, np.tile(logits, (n // 2, 1)).astype(dtype))
    draws.append(g.forward_node(s).copy())
    counts = np.bincount(np.concatenate(draws), minlength=5)
    chi2 = float((((counts - n * p) ** 2) / (n * p)).sum())
    assert chi2 < 25.0, (counts, n * p)  # 4 degrees of freedom: p-value ~5e-5, and the seed is fixed


def test_extreme_logits():
    g, _, s = _sampler(np.array([[0.0, -1000.0]] * 500 + [[-1e4, 1e4]] * 500 + [[1e4, 0.0]] * 500))
    with np.errstate(all="raise"):
        out = g.forward_node(s)
    np.testing.assert_array_equal(out, [0] * 500 + [1] * 500 + [0] * 500)
    g, _, s = _sampler(np.array([[-np.inf, 0.0, -np.inf, 0.0]] * 1000))
    out = g.forward_node(s)
    assert set(np.unique(out)) == {1, 3}


def test_no_gradient_flows_through_a_sample():
    g, x, s = _sampler(np.random.default_rng(0).standard_normal((6, 3)))
    y = g.sum(s * 1.0)
    g.forward_node(y)
    assert g.grad(y, [x], allow_unused=True) == [None]
    with pytest.raises(ot.GraphError, match="not reachable"):
        g.grad(y, [x])
    w = g.parameter("w", value=np.ones(3))
    y2 = g.sum(g.categorical_sample(x * w) * 1.0)
    g.forward_node(y2)
    g.backward_nodes([w], y2)
    assert g.get_node_grad(w) is None


def test_sampled_actions_feed_log_prob_whose_gradient_matches_torch():
    """REINFORCE: -mean(log_prob(logits, sampled actions) * advantage); the gradient flows through
    log_prob only."""
    rng = np.random.default_rng(1)
    logits, adv = rng.standard_normal((8, 4)), rng.standard_normal(8)
    g = ot.Graph(seed=2, dtype="float64")
    x = g.parameter("logits", value=logits)
    a = g.categorical_sample(x)
    loss = -g.mean(g.categorical_log_prob(x, a) * adv)
    g.forward_node(loss)
    g.backward_nodes([x], loss)
    t = torch.tensor(logits, requires_grad=True)
    actions = torch.tensor(g.get_node_value(a))
    (-(Categorical(logits=t).log_prob(actions) * torch.tensor(adv)).mean()).backward()
    np.testing.assert_allclose(
        float(g.get_node_value(loss)), -(Categorical(logits=t).log_prob(actions) * torch.tensor(adv)).mean().item()
    )
    np.testing.assert_allclose(g.get_node_grad(x), t.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("logits", "message"),
    [
        ([[0.0, np.nan, 1.0]], "categorical_sample: logits 'logits' hold NaN or +inf"),
        ([[0.0, np.inf, 1.0]], "categorical_sample: logits 'logits' hold NaN or +inf"),
        (
            [[0.0, 1.0, 1.0], [-np.inf] * 3],
            "categorical_sample: a row of logits 'logits' is all -inf (no class can be drawn)",
        ),
    ],
)
def test_sample_refuses_logits_without_a_distribution(logits, message):
    g, _, s = _sampler(np.array(logits))
    with pytest.raises(ot.GraphError) as e:
        g.forward_node(s)
    assert str(e.value) == message


def test_sample_needs_a_class_axis():
    g = ot.Graph()
    with pytest.raises(ot.ShapeError, match="categorical_sample needs logits with a class axis"):
        g.categorical_sample(g.constant(np.float64(1.0)))


# ---------------------------------------------------------------- log_prob and entropy


def _graph_with_actions(actions, dtype="int64"):
    g = ot.Graph(dtype="float64")
    x = g.input("logits", (None, 4))
    a = g.input("actions", (None,), dtype=dtype)
    g.set_value(x, np.zeros((len(actions), 4)))
    g.set_value(a, np.array(actions))
    return g, x, a


@pytest.mark.parametrize("bad", [4, 7, -1])
def test_log_prob_names_the_range_of_actions(bad):
    g, x, a = _graph_with_actions([0, bad, 1])
    lp = g.categorical_log_prob(x, a)
    with pytest.raises(ot.GraphError) as e:
        g.forward_node(lp)
    assert str(e.value) == (
        f"categorical_log_prob: actions 'actions' must lie in [0, 4) (the classes on the logits' last axis), got {bad}"
    )


def test_log_prob_refuses_float_actions():
    g, x, a = _graph_with_actions([0.0, 1.0], dtype="float64")
    with pytest.raises(ot.GraphError) as e:
        g.categorical_log_prob(x, a)
    assert str(e.value) == (
        "categorical_log_prob needs integer actions; 'actions' holds floats (declare the input with dtype='int64')"
    )


def test_log_prob_shape_errors():
    g, x, _ = _graph_with_actions([0])
    wrong = g.input("wrong", (None, 2), dtype="int64")
    with pytest.raises(
        ot.ShapeError, match=r"actions 'wrong' must have the logits' shape without the class axis, \(N,\), got \(N, 2\)"
    ):
        g.categorical_log_prob(x, wrong)
    free = g.input("free", (3, None))
    with pytest.raises(ot.ShapeError, match="needs a fixed number of classes on its last axis"):
        g.categorical_log_prob(free, g.input("a3", (3,), dtype="int64"))
    with pytest.raises(ot.ShapeError, match="categorical_entropy needs logits with a class axis"):
        g.categorical_entropy(g.sum(x))


def test_minus_inf_logits_mean_impossible_classes():
    """A masked class (-inf logit) changes nothing but its own probability: entropy and
    log-probabilities equal those of the distribution without it, with finite gradients, and
    the masked column receives zero gradient (first and second order)."""
    logits = np.array([[0.3, -np.inf, 1.2, -0.5], [-np.inf, -np.inf, 2.0, 0.1]])
    keep = [[0, 2, 3], [2, 3]]
    actions = np.array([2, 3])
    g = ot.Graph(dtype="float64")
    x = g.input("logits", (2, 4))
    a = g.constant(actions)
    g.set_value(x, logits)
    h, lp = g.categorical_entropy(x), g.categorical_log_prob(x, a)
    y = g.sum(h) + g.sum(lp)
    g.forward_node(y)
    (gx,) = g.grad(y, [x], create_graph=True)
    gsq = g.sum(gx * gx)
    g.forward_node(gsq)
    (gg,) = g.grad(gsq, [x])
    assert np.isfinite(g.forward_node(gx)).all() and np.isfinite(gg).all()
    for row, cols in enumerate(keep):
        t = torch.tensor(logits[row, cols], requires_grad=True)
        d = Categorical(logits=t)
        ty = d.entropy() + d.log_prob(torch.tensor(cols.index(actions[row])))
        (tg,) = torch.autograd.grad(ty, t, create_graph=True)
        (tgg,) = torch.autograd.grad((tg * tg).sum(), t)
        np.testing.assert_allclose(g.get_node_value(h)[row], d.entropy().item(), rtol=1e-12)
        np.testing.assert_allclose(g.get_node_value(gx)[row, cols], tg.detach().numpy(), rtol=1e-10)
        np.testing.assert_allclose(gg[row, cols], tgg.numpy(), rtol=1e-9)
        masked = [c for c in range(4) if c not in cols]
        assert (g.get_node_value(gx)[row, masked] == 0).all() and (gg[row, masked] == 0).all()


def test_entropy_of_very_negative_logits_is_finite_and_silent():
    g = ot.Graph(dtype="float32")
    g.set_anomaly_detection(True)
    x = g.input("logits", (3,))
    g.set_value(x, np.array([0.0, -1e4, -1e30], dtype=np.float32))
    h = g.categorical_entropy(x)
    y = g.sum(h)
    np.testing.assert_allclose(g.forward_node(h), 0.0, atol=1e-6)
    g.forward_node(y)
    (gx,) = g.grad(y, [x])
    assert np.isfinite(gx).all() and gx.dtype == np.float32


# ---------------------------------------------------------------- ppo_clip


@pytest.mark.parametrize("clip", [0, 1, 1.5, -0.1, True, "0.2", None])
def test_ppo_clip_must_lie_strictly_between_0_and_1(clip):
    g = ot.Graph()
    r = g.input("r", (None,))
    with pytest.raises(ot.GraphError) as e:
        g.ppo_clip(r, r, clip=clip)
    assert str(e.value) == f"ppo_clip: clip must be a number in (0, 1), e.g. 0.2; got {clip!r}"


def test_ppo_clip_values_and_gradient_on_each_side_of_the_bounds():
    ratio = np.array([0.5, 0.5, 1.0, 1.0, 1.5, 1.5])
    adv = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    g = ot.Graph(dtype="float64")
    r = g.input("r", (6,))
    g.set_value(r, ratio)
    out = g.ppo_clip(r, adv, clip=0.2)
    np.testing.assert_allclose(g.forward_node(out), [0.5, -0.8, 1.0, -1.0, 1.2, -1.5])
    y = g.sum(out)
    g.forward_node(y)
    # clipped where the ratio moved past the bound in the advantage's favour: no gradient there
    np.testing.assert_array_equal(g.grad(y, r), [1.0, 0.0, 1.0, -1.0, 0.0, -1.0])


# ---------------------------------------------------------------- DQN with existing ops


def test_dqn_target_and_action_value_keep_integer_actions():
    """take_along(q, a[:, None], axis=1) with int64 actions from an input, and the target
    r + 0.99 (1 - done) stop_gradient(max(Q_target(s2), axis=1)), against torch."""
    rng = np.random.default_rng(4)
    s, s2 = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    acts, rew, done = np.array([0, 1, 1, 0, 1]), rng.standard_normal(5), np.array([0.0, 0.0, 1.0, 0.0, 1.0])
    w0, wt0 = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))

    g = ot.Graph(dtype="float64")
    si, s2i = g.input("s", (None, 3)), g.input("s2", (None, 3))
    a = g.input("a", (None,), dtype="int64")
    r, d = g.input("r", (None,)), g.input("done", (None,))
    w, wt = g.parameter("w", value=w0), g.parameter("wt", value=wt0)
    for node, v in ((si, s), (s2i, s2), (a, acts), (r, rew), (d, done)):
        g.set_value(node, v)
    column = a[:, None]
    assert column.dtype == np.int64 and g.reshape(a, shape=(-1, 1)).dtype == np.int64
    q_a = g.take_along(si @ w, column, axis=1)[:, 0]
    q_a2 = g.take_along(si @ w, g.reshape(a, shape=(-1, 1)), axis=1)[:, 0]
    target = r + 0.99 * (1 - d) * g.stop_gradient(g.max(s2i @ wt, axis=1))
    loss = g.mse(q_a, target)
    g.forward_node(loss)
    np.testing.assert_array_equal(g.forward_node(q_a2), g.forward_node(q_a))
    g.backward_nodes([w, wt], loss)
    assert g.get_node_grad(wt) is None

    tw, twt = torch.tensor(w0, requires_grad=True), torch.tensor(wt0, requires_grad=True)
    tq = (torch.tensor(s) @ tw).gather(1, torch.tensor(acts)[:, None])[:, 0]
    tt = torch.tensor(rew) + 0.99 * (1 - torch.tensor(done)) * (torch.tensor(s2) @ twt).max(dim=1).values.detach()
    tl = torch.nn.functional.mse_loss(tq, tt)
    tl.backward()
    np.testing.assert_allclose(float(g.get_node_value(loss)), tl.item(), rtol=1e-12)
    np.testing.assert_allclose(g.get_node_grad(w), tw.grad.numpy(), rtol=1e-12)
