"""The reinforcement-learning specs through the command line: each trains briefly into a complete
run directory (training-episode statistics and greedy evaluation episodes in the metrics),
``onlytorch eval`` runs whole episodes (greedy or sampled, any number, as JSON), a resumed run
ends bit-identical to an uninterrupted one (environments, buffers and generators included), and
``report`` shows the training episodes. The full-length runs are documented in each spec's header."""

from __future__ import annotations

import json

import pytest

from . import assert_same_state, fails, info, ok, rows, spec

pytest.importorskip("gymnasium")

# spec -> overrides that keep a run to a second or two
SHORT = {
    "a2c_cartpole": ["train.steps=6", "data.train.envs=2", "data.train.steps=16", "train.eval_every=3"],
    "ppo_cartpole": [
        "train.steps=2",
        "data.train.envs=2",
        "data.train.steps=32",
        "data.batch_size=32",
        "train.eval_every=1",
    ],
    "dqn_cartpole": [
        "train.steps=6",
        "data.train.warmup=64",
        "data.train.env_steps=16",
        "train.schedule.td.repeat=4",
        "data.batch_size=16",
        "train.eval_every=3",
    ],
}


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


@pytest.mark.parametrize("name", sorted(SHORT))
def test_rl_spec_trains_into_a_complete_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = ok("train", spec(name), "--out", "run", "-q", *sets(SHORT[name]), "--set", "eval.episodes=3")
    assert "evaluation: 3 episodes, greedy policy (no_grad)" in result.output
    summary = info(tmp_path / "run")
    assert summary["status"] == "completed"
    train_rows = [r for r in rows(tmp_path / "run") if r["kind"] == "train"]
    eval_rows = [r for r in rows(tmp_path / "run") if r["kind"] == "eval"]
    assert train_rows and all("rollout/env_steps" in r for r in train_rows)
    assert eval_rows
    for r in eval_rows:
        assert {"eval/return_mean", "eval/return_std", "eval/episode_length"} <= set(r)
        assert r["eval/return_mean"] >= 8  # CartPole lasts at least 8 steps, one reward each
    assert summary["best"]["metric"] == "return_mean"
    report = ok("report", "run")
    assert "rollout (training episodes of a gym source)" in report.output


def test_eval_runs_episodes_greedy_or_sampled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok("train", spec("ppo_cartpole"), "--out", "run", "-q", *sets(SHORT["ppo_cartpole"]))
    ckpt = "run/checkpoints/last.npz"
    table = ok("eval", spec("ppo_cartpole"), "--checkpoint", ckpt, "--episodes", "4").output
    assert "4 episodes of run/checkpoints/last.npz (greedy policy, no_grad)" in table
    assert "return_mean" in table and "return_std" in table
    first = json.loads(ok("eval", spec("ppo_cartpole"), "--checkpoint", ckpt, "--episodes", "4", "--json").stdout)
    again = json.loads(ok("eval", spec("ppo_cartpole"), "--checkpoint", ckpt, "--episodes", "4", "--json").stdout)
    assert first == again, "evaluation episodes are seeded"
    assert first["episodes"] == 4 and first["policy"] == "greedy"
    m = first["metrics"]
    assert m["return_min"] <= m["return_mean"] <= m["return_max"]
    sampled = json.loads(
        ok(
            "eval", spec("ppo_cartpole"), "--checkpoint", ckpt, "--episodes", "4", "--policy", "sampled", "--json"
        ).stdout
    )
    assert sampled["policy"] == "sampled"
    # A spec's own eval section sets the defaults.
    default = json.loads(
        ok("eval", spec("ppo_cartpole"), "--checkpoint", ckpt, "--json", "--set", "eval.episodes=2").stdout
    )
    assert default["episodes"] == 2


def test_eval_refuses_options_that_do_not_apply(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok("train", spec("a2c_cartpole"), "--out", "run", "-q", *sets(SHORT["a2c_cartpole"]))
    out = fails(2, "eval", spec("a2c_cartpole"), "--checkpoint", "run/checkpoints/last.npz", "--split", "test").output
    assert "evaluated in episodes; --split does not apply" in out
    ok("train", spec("xor"), "--out", "xor", "-q", "--set", "train.steps=5")
    out = fails(2, "eval", spec("xor"), "--checkpoint", "xor/checkpoints/last.npz", "--episodes", "3").output
    assert "--episodes and --policy apply to specs with a gym training source" in out
    # A checkpoint of another spec is refused, naming the parameter.
    out = fails(2, "eval", spec("a2c_cartpole"), "--checkpoint", "xor/checkpoints/last.npz").output
    assert "the checkpoint has no parameter" in out


@pytest.mark.parametrize("name", sorted(SHORT))
def test_resume_continues_rl_training_exactly(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = [o for o in SHORT[name] if not o.startswith(("train.steps", "train.eval_every"))]
    total = 6
    ok("train", spec(name), "--out", "full", "-q", *sets(base), "--set", f"train.steps={total}")
    ok("train", spec(name), "--out", "half", "-q", *sets(base), "--set", f"train.steps={total // 2}")
    ok("train", spec(name), "--out", "half", "-q", "--resume", *sets(base), "--set", f"train.steps={total}")
    assert_same_state("full/checkpoints/last.npz", "half/checkpoints/last.npz", ignore=("meta/spec_hash",))


# spec -> (quantity in run.json's final values, threshold, what the spec claims); trained as written
FULL = {
    "a2c_cartpole": ("rollout/return_mean", 195.0, "mean return of the last 20 training episodes >= 195"),
    "ppo_cartpole": ("eval/return_mean", 475.0, "mean return of 20 greedy evaluation episodes >= 475"),
}


@pytest.mark.parametrize("name", sorted(FULL))
def test_rl_example_reaches_its_stated_return(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    key, threshold, claim = FULL[name]
    ok("train", spec(name), "--out", "run", "-q")
    final = info(tmp_path / "run")["final"]
    assert final[key] >= threshold, f"{name}: {key} = {final[key]}, the spec claims {claim}"
    # onlytorch eval scores the saved policy on the same seeded episodes as the run's last evaluation.
    evaluated = json.loads(ok("eval", spec(name), "--checkpoint", "run/checkpoints/last.npz", "--json").stdout)
    assert evaluated["metrics"]["return_mean"] == final["eval/return_mean"]
