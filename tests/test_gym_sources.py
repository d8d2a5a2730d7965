"""The gym data sources (gym.rollout, gym.replay) on a deterministic environment whose returns are
known by hand (tests/gym_chain.py): what a collection records, how termination and truncation end
returns, that collecting runs under no_grad and leaves gradient tracking and the train/eval mode as
they were, seeding, and the replay buffer's warmup, capacity, epsilon and flags."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from gym_chain import CHAIN

from onlytorch.compile import compile_text
from onlytorch.data.gym.envs import VectorEnv
from onlytorch.train import Trainer

ROLLOUT = textwrap.dedent(
    f"""\
    version: 1
    name: chain-rollout
    seed: 0
    dtype: float64
    data:
      train:
        source: gym.rollout
        env: {CHAIN}
        env_kwargs: {{max_episode_steps: 4}}
        envs: 2
        steps: 6
        action: action
        log_prob: logp_taken
        value: value
        gamma: 0.5
        lam: 0.0
      batch_size: 12
    inputs:
      obs: {{shape: [2], from: train.obs}}
      act: {{dtype: int64, from: train.action}}
      ret: {{from: train.return}}
    modules:
      pi: [{{linear: 2}}]
      v: [{{linear: 1}}]
    nodes:
      logits: pi(obs)
      action: categorical_sample(logits)
      logp_taken: categorical_log_prob(logits, action)
      value: reshape(v(obs), [-1])
    losses:
      actor: -mean(categorical_log_prob(logits, act) * (ret - stop_gradient(value)))
      critic: mean((ret - value) ** 2)
    optimizers:
      opt: {{type: sgd, lr: 0.01, params: [pi, v]}}
    train:
      steps: 3
      schedule:
        - name: ac
          backward: [{{loss: actor, wrt: [pi], retain_graph: true}}, {{loss: critic, wrt: [v]}}]
          step: [opt]
    """
)

REPLAY = textwrap.dedent(
    f"""\
    version: 1
    name: chain-replay
    seed: 0
    dtype: float64
    data:
      train:
        source: gym.replay
        env: {CHAIN}
        env_kwargs: {{term_at: 3}}
        capacity: 50
        warmup: 10
        env_steps: 2
        action: greedy
        epsilon_start: 1.0
        epsilon_end: 0.1
        epsilon_steps: 20
      batch_size: 8
    inputs:
      s: {{shape: [2], from: train.obs}}
      a: {{dtype: int64, from: train.action}}
      r: {{from: train.reward}}
      s2: {{shape: [2], from: train.next_obs}}
      done: {{from: train.terminated}}
    modules:
      Q: [{{linear: 2}}]
      Qt: {{copy_of: Q, sync: {{every: 3}}}}
    nodes:
      q: Q(s)
      greedy: argmax(q, axis=1)
      q_taken: take_along(q, a[:, None], axis=1)[:, 0]
      target: r + 0.9 * (1 - done) * stop_gradient(max(Qt(s2), axis=1))
    losses:
      td: huber(q_taken, target)
    optimizers:
      opt: {{type: sgd, lr: 0.01, params: [Q]}}
    train:
      steps: 5
      schedule:
        - name: td
          backward: [{{loss: td}}]
          step: [opt]
    """
)


def trainer(text: str, **replace: str) -> Trainer:
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    compiled, report = compile_text(text, "chain.yaml")
    assert compiled is not None, report.render()
    return Trainer(compiled)


def value_is_t(t: Trainer) -> None:
    """Critic weights so that V(obs) = t exactly (obs = [t, 1])."""
    w, b = t.c.modules["v"].params
    t.g.set_value(w, np.array([[1.0], [0.0]]))
    t.g.set_value(b, np.array([0.0]))


# -------------------------------------------------------------- rollout


def test_rollout_records_obs_actions_rewards_and_policy_values():
    t = trainer(ROLLOUT)
    t.live.begin_iteration()
    buf = t.live.buffer
    assert set(buf) == {
        "obs",
        "action",
        "reward",
        "terminated",
        "truncated",
        "advantage",
        "return",
        "log_prob",
        "value",
    }
    assert buf["obs"].shape == (12, 2) and buf["action"].dtype == np.int64
    # Time-major: rows 2k and 2k+1 are step k of environments 0 and 1. Episodes last 4 steps.
    steps = np.repeat(np.arange(6) % 4, 2)
    np.testing.assert_array_equal(buf["obs"][:, 0], steps)
    np.testing.assert_array_equal(buf["reward"], steps + 1 + buf["action"])
    np.testing.assert_array_equal(buf["truncated"], (steps == 3).astype(float))
    np.testing.assert_array_equal(buf["terminated"], np.zeros(12))
    # log_prob and value are the policy's own values for those observations and actions.
    g = t.g
    with g.no_grad():
        g.set_value("obs", buf["obs"])
        logits = g.forward_node("logits")
        value = g.forward_node("value")
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(buf["log_prob"], logp[np.arange(12), buf["action"]], rtol=1e-12)
    np.testing.assert_allclose(buf["value"], value, rtol=1e-12)


def test_truncation_bootstraps_from_the_final_observation_and_termination_does_not():
    # lam = 0: return_t = r_t + gamma * (1 - terminated_t) * V(observation reached), V(obs) = t.
    for kwargs, terminated in (("{max_episode_steps: 4}", False), ("{term_at: 4}", True)):
        t = trainer(ROLLOUT, **{"{max_episode_steps: 4}": kwargs})
        value_is_t(t)
        t.live.begin_iteration()
        buf = t.live.buffer
        steps = np.repeat(np.arange(6) % 4, 2)
        reached = steps + 1.0  # the observation a step reaches is t + 1, also the final one
        end = steps == 3
        want = buf["reward"] + 0.5 * np.where(end & terminated, 0.0, reached)
        np.testing.assert_allclose(buf["return"], want, rtol=1e-12)
        np.testing.assert_array_equal(buf["terminated"], (end & terminated).astype(float))
        np.testing.assert_array_equal(buf["truncated"], (end & (not terminated)).astype(float))
        np.testing.assert_allclose(buf["advantage"], want - steps, rtol=1e-12)


def test_gae_lambda_is_applied_within_episodes_only():
    t = trainer(ROLLOUT, **{"lam: 0.0": "lam: 1.0"})
    value_is_t(t)
    t.live.begin_iteration()
    buf = t.live.buffer
    r = buf["reward"].reshape(6, 2)
    ret = buf["return"].reshape(6, 2)
    for e in range(2):
        # Steps 0-3 form one truncated episode (bootstrap V = 4), steps 4-5 the next (bootstrap V = 2).
        g = 0.5
        assert ret[3, e] == pytest.approx(r[3, e] + g * 4)
        assert ret[0, e] == pytest.approx(r[0, e] + g * r[1, e] + g**2 * r[2, e] + g**3 * r[3, e] + g**4 * 4)
        assert ret[4, e] == pytest.approx(r[4, e] + g * r[5, e] + g**2 * 2)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_collecting_runs_under_no_grad_and_restores_tracking_and_mode(mode):
    t = trainer(ROLLOUT)
    g = t.g
    g.set_train_mode() if mode == "train" else g.set_eval_mode()
    seen = []
    forward = g.forward_node

    def spy(node):  # type: ignore[no-untyped-def]
        seen.append((g.is_grad_enabled(), g.is_train_mode()))
        return forward(node)

    g.forward_node = spy  # type: ignore[method-assign]
    t.live.begin_iteration()
    assert seen and set(seen) == {(False, False)}
    assert g.is_grad_enabled() and g.is_train_mode() == (mode == "train")


def test_collecting_restores_tracking_when_the_environment_fails():
    t = trainer(ROLLOUT)
    env = t.live.env.envs[0]

    def broken(action):  # type: ignore[no-untyped-def]
        raise RuntimeError("the simulator crashed")

    env.step = broken
    with pytest.raises(RuntimeError, match="simulator crashed"):
        t.live.begin_iteration()
    assert t.g.is_grad_enabled() and t.g.is_train_mode()


def test_collections_are_seeded():
    a, b, c = trainer(ROLLOUT), trainer(ROLLOUT), trainer(ROLLOUT, **{"seed: 0": "seed: 1"})
    for x in (a, b, c):
        x.live.begin_iteration()
        x.live.begin_iteration()
    for k in a.live.buffer:
        np.testing.assert_array_equal(a.live.buffer[k], b.live.buffer[k])
    assert not np.array_equal(a.live.buffer["action"], c.live.buffer["action"])


def test_advantages_normalised_per_collection():
    t = trainer(ROLLOUT, **{"lam: 0.0": "lam: 0.0\n    normalize_advantages: true"})
    t.live.begin_iteration()
    adv = t.live.buffer["advantage"]
    assert abs(adv.mean()) < 1e-9 and abs(adv.std() - 1.0) < 1e-6


def test_epochs_run_one_repetition_per_minibatch_of_each_pass():
    t = trainer(ROLLOUT, **{"batch_size: 12": "batch_size: 5", "- name: ac\n": "- name: ac\n      epochs: 2\n"})
    assert t._repeats(t.c.phases[0]) == 2 * 3  # 12 transitions in batches of 5, 5, 2; two passes
    t.run_iteration()
    assert t.live.batches is not None and t.live.batches.epoch == 2


def test_training_iterations_collect_and_count_episodes():
    t = trainer(ROLLOUT)
    for _ in range(3):
        t.run_iteration()
    stats = t.live.stats()
    assert stats["env_steps"] == 3 * 12 and stats["episodes"] == 8  # 18 steps per env: 4 whole episodes each
    assert stats["episode_length"] == 4
    ep = t.episodes(3)
    assert ep["episode_length"] == 4 and ep["return_min"] >= 1 + 2 + 3 + 4


# -------------------------------------------------------------- replay


def test_replay_warms_up_with_random_actions_then_steps_each_iteration():
    t = trainer(REPLAY)
    t.run_iteration()
    live = t.live
    assert live.size == 10 + 2 and live.env.steps == 12 and live.explore_steps == 2
    t.run_iteration()
    assert live.size == 14 and live.explore_steps == 4


def test_replay_flags_termination_not_truncation_and_keeps_the_final_observation():
    for kwargs, terminated in (("{term_at: 3}", True), ("{max_episode_steps: 3}", False)):
        t = trainer(REPLAY, **{"{term_at: 3}": kwargs})
        t.run_iteration()
        a = {k: v[: t.live.size] for k, v in t.live.arrays.items()}
        last = a["obs"][:, 0] == 2  # the third step of an episode ends it
        assert last.any()
        np.testing.assert_array_equal(a["next_obs"][last, 0], 3.0)  # the final observation, not a reset's 0
        np.testing.assert_array_equal(a["terminated"], (last & terminated).astype(float))
        np.testing.assert_array_equal(a["reward"], a["obs"][:, 0] + 1 + a["action"])


def test_replay_capacity_keeps_the_newest_transitions():
    t = trainer(REPLAY, **{"capacity: 50": "capacity: 10"})
    live = t.live
    for i in range(13):
        x = np.array([[float(i), 1.0]])
        live.add(x, np.array([0]), np.array([float(i)]), x, np.array([0.0]))
    assert live.size == 10
    assert sorted(live.arrays["reward"].tolist()) == [float(i) for i in range(3, 13)]
    batch = live.next_batch()
    assert batch["obs"].shape == (8, 2) and set(batch) == {"obs", "action", "reward", "next_obs", "terminated"}


def test_replay_epsilon_decays_linearly_after_warmup():
    t = trainer(REPLAY)
    live = t.live
    assert live.epsilon() == 1.0
    live.explore_steps = 10
    assert live.epsilon() == pytest.approx(0.55)
    live.explore_steps = 20
    assert live.epsilon() == pytest.approx(0.1)
    live.explore_steps = 1000
    assert live.epsilon() == pytest.approx(0.1)


def test_replay_acts_greedily_when_epsilon_is_zero():
    t = trainer(REPLAY, **{"epsilon_start: 1.0": "epsilon_start: 0.0", "epsilon_end: 0.1": "epsilon_end: 0.0"})
    w, b = t.c.modules["Q"].params
    t.g.set_value(w, np.zeros((2, 2)))
    t.g.set_value(b, np.array([0.0, 1.0]))  # Q prefers action 1 everywhere
    t.run_iteration()
    t.run_iteration()
    acted = t.live.arrays["action"][10 : t.live.size]
    assert acted.tolist() == [1, 1, 1, 1]


# -------------------------------------------------------------- state


def test_vector_env_state_restores_the_environments_exactly():
    a = VectorEnv("CartPole-v1", 3, seed=5)
    rng = np.random.default_rng(0)
    for _ in range(30):
        a.step(rng.integers(2, size=3))
    saved = a.state()
    b = VectorEnv("CartPole-v1", 3, seed=99)
    b.restore(saved)
    actions = rng.integers(2, size=(60, 3))
    for act in actions:
        sa, sb = a.step(act), b.step(act)
        for field in ("obs", "reward", "terminated", "truncated", "final_obs"):
            np.testing.assert_array_equal(getattr(sa, field), getattr(sb, field))
    assert a.returns == b.returns and a.steps == b.steps


def test_progress_shows_the_training_episodes_return():
    from onlytorch.train import train_loop

    t = trainer(ROLLOUT)
    shown: list[dict[str, float]] = []
    logged = []
    train_loop(t, 3, on_log=logged.append, progress=lambda step, values: shown.append(values))
    assert [set(v) for v in shown] == [{"ac/actor", "ac/critic", "rollout/return_mean"}] * 3
    # two episodes of 4 steps with rewards t + 1 + action: each returns between 10 and 14
    assert all(10 <= v["rollout/return_mean"] <= 14 for v in shown)
    assert "rollout/return_mean" in logged[-1].values and "rollout/env_steps" in logged[-1].values
