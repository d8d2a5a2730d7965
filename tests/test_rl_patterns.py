"""The seed's reinforcement-learning gradient-flow rules, on the example specs themselves:
the actor's loss sends no gradient into the critic (its value enters the advantage through
stop_gradient), the target network receives no gradient at all and follows its source exactly
when it syncs (every N iterations, or by Polyak averaging), and PPO's policy loss reaches only
the backbone and the policy head."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

from onlytorch.compile import Compiled, compile_text
from onlytorch.train import Trainer

pytest.importorskip("gymnasium")
SPECS = pathlib.Path(__file__).resolve().parents[1] / "specs"


def compiled(stem: str, edit=None) -> Compiled:  # type: ignore[no-untyped-def]
    text = (SPECS / f"{stem}.yaml").read_text(encoding="utf-8")
    text = text.replace("seed: 0\n", "seed: 0\ndtype: float64\n", 1)
    if edit is not None:
        text = edit(text)
    c, report = compile_text(text, f"{stem}.yaml", SPECS)
    assert c is not None, report.render()
    return c


def feed_batch(c: Compiled, n: int = 16) -> None:
    """A batch for every data input, as the rollout would give it."""
    rng = np.random.default_rng(0)
    for name, inp in c.spec.inputs.items():
        node = c.inputs[name]
        shape = (n, *node.shape[1:])
        if inp.dtype == "int64":
            c.graph.set_value(node, rng.integers(2, size=shape))
        else:
            c.graph.set_value(node, rng.normal(size=shape))


def grads_after(c: Compiled, loss: str, modules: list[str]) -> dict[str, list[np.ndarray | None]]:
    g = c.graph
    g.clear_jacobi()
    params = [p for m in modules for p in c.modules[m].params]
    g.forward_node(c.losses[loss])
    g.backward_nodes_ex(params, c.losses[loss], retain_graph=True)
    return {m: [g.get_node_grad(p) for p in c.modules[m].params] for m in modules}


def test_a2c_actor_loss_sends_no_gradient_into_the_critic_head():
    c = compiled("a2c_cartpole")
    feed_batch(c)
    grads = grads_after(c, "actor_loss", ["body", "pi", "v"])
    assert all(gr is None for gr in grads["v"]), "the critic head must get nothing from the actor's loss"
    assert all(gr is not None and np.abs(gr).max() > 0 for gr in grads["body"] + grads["pi"])
    # The critic's own loss does reach it (and not the policy head).
    grads = grads_after(c, "critic_loss", ["body", "pi", "v"])
    assert all(gr is not None for gr in grads["v"]) and all(gr is None for gr in grads["pi"])


def test_a2c_without_the_stop_gradient_would_train_the_critic_with_the_actor_loss():
    # The control experiment: the same spec with the critic's value not detached.
    def attach(text: str) -> str:
        assert "stop_gradient(value)" in text
        return text.replace("stop_gradient(value)", "value")

    c = compiled("a2c_cartpole", attach)
    feed_batch(c)
    grads = grads_after(c, "actor_loss", ["v"])
    assert all(gr is not None for gr in grads["v"]), "without the cut the actor's loss reaches the whole critic head"
    # The head's weight moves; its bias gets exactly what the centred advantage sums to, which is
    # 0 up to rounding (a constant shift of every value cancels in advantage - mean(advantage)).
    weight, bias = grads["v"]
    assert np.abs(weight).max() > 1e-6 and np.abs(bias).max() < 1e-12


def test_ppo_policy_loss_reaches_backbone_and_policy_head_only():
    c = compiled("ppo_cartpole")
    feed_batch(c)
    grads = grads_after(c, "policy_loss", ["body", "pi", "v"])
    assert all(gr is None for gr in grads["v"])
    assert all(gr is not None for gr in grads["body"] + grads["pi"])
    # The compile report agrees: each backward of the phase reaches what its wrt names.
    phase = c.phases[0]
    assert phase.backward[0].retain_graph and not phase.backward[-1].retain_graph


def test_dqn_target_network_receives_no_gradient():
    c = compiled("dqn_cartpole")
    copy, (source, _) = next(iter(c.targets.items()))
    feed_batch(c)
    grads = grads_after(c, "td", [source, copy])
    assert all(gr is None for gr in grads[copy])
    assert all(gr is not None for gr in grads[source])


def with_sync(sync: str):  # type: ignore[no-untyped-def]
    def edit(text: str) -> str:
        out, n = re.subn(r"sync: \{[^}]*\}", f"sync: {sync}", text)
        assert n == 1
        # a short warm-up keeps the test quick
        return re.sub(r"warmup: [0-9_]+", "warmup: 64", out)

    return edit


def values(c: Compiled, module: str) -> list[np.ndarray]:
    return [np.array(c.graph.get_node_value(p), copy=True) for p in c.modules[module].params]


def test_dqn_target_syncs_exactly_every_n_iterations():
    c = compiled("dqn_cartpole", with_sync("{every: 3}"))
    copy, (source, _) = next(iter(c.targets.items()))
    t = Trainer(c)
    assert all(np.array_equal(a, b) for a, b in zip(values(c, copy), values(c, source)))
    for step in range(1, 8):
        before = values(c, copy)
        t.run_iteration()
        after = values(c, copy)
        if step % 3 == 0:
            assert all(np.array_equal(a, b) for a, b in zip(after, values(c, source))), step
        else:
            assert all(np.array_equal(a, b) for a, b in zip(after, before)), step
            assert not all(np.array_equal(a, b) for a, b in zip(after, values(c, source))), step


def test_dqn_target_polyak_averaging_is_exact():
    c = compiled("dqn_cartpole", with_sync("{tau: 0.25}"))
    copy, (source, _) = next(iter(c.targets.items()))
    t = Trainer(c)
    for _ in range(3):
        before = values(c, copy)
        t.run_iteration()
        want = [0.25 * s + 0.75 * b for s, b in zip(values(c, source), before)]
        for got, w in zip(values(c, copy), want):
            np.testing.assert_allclose(got, w, rtol=1e-15, atol=0)
