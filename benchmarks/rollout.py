"""Rollout throughput (not a test): ``python -m benchmarks.rollout [--quick]``.

Environment steps per second of the collection loop of specs/ppo_cartpole.yaml (8 CartPole
copies; the policy's action, log-probability and value for every step), with the policy forward
under no_grad as the trainer runs it, beside the same loop with gradient tracking on, the
environments alone (random actions: the floor), and the same policy in PyTorch with and without
torch.no_grad(). Repeats are interleaved; medians."""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from onlytorch.compile import compile_file
from onlytorch.data.gym.envs import VectorEnv
from onlytorch.train import Trainer

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 256


def ours(track: bool) -> Callable[[], None]:
    compiled, report = compile_file(os.path.join(HERE, "specs", "ppo_cartpole.yaml"))
    assert compiled is not None, report.render()
    trainer = Trainer(compiled)
    live = trainer.live
    assert live is not None
    g, policy, env = compiled.graph, live.policy, live.env
    nodes = [policy.action, *policy.extra.values()]

    def loop() -> None:
        obs = env.current()
        for _ in range(STEPS):
            scope = contextlib.nullcontext() if track else g.no_grad()
            with scope:
                for inp in policy.obs_inputs:
                    g.set_value(inp, obs)
                values = g.forward_node(nodes)
            obs = env.step(np.asarray(values[0])).obs

    return loop


def env_only(n: int) -> Callable[[], None]:
    env = VectorEnv("CartPole-v1", n, seed=0)
    rng = np.random.default_rng(0)

    def loop() -> None:
        env.current()
        for _ in range(STEPS):
            env.step(rng.integers(2, size=n))

    return loop


def torch_twin(n: int, no_grad: bool) -> Callable[[], None] | None:
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh())
    pi, v = torch.nn.Linear(64, 2), torch.nn.Linear(64, 1)
    env = VectorEnv("CartPole-v1", n, seed=0)

    def loop() -> None:
        obs = env.current()
        for _ in range(STEPS):
            scope = torch.no_grad() if no_grad else contextlib.nullcontext()
            with scope:
                h = body(torch.as_tensor(obs))
                dist = torch.distributions.Categorical(logits=pi(h))
                action = dist.sample()
                dist.log_prob(action)
                v(h)
            obs = env.step(action.numpy()).obs

    return loop


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.rollout", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a rough look)")
    report(ap.parse_args().quick)


def report(quick: bool) -> None:
    """Measure every loop and print steps per second (also part of ``python -m benchmarks``)."""
    n_envs = 8
    cases = {
        "ours, policy under no_grad": ours(track=False),
        "ours, gradient tracking on": ours(track=True),
        "environments alone (random)": env_only(n_envs),
        "torch, torch.no_grad()": torch_twin(n_envs, no_grad=True),
        "torch, gradient tracking on": torch_twin(n_envs, no_grad=False),
    }
    live = {k: f for k, f in cases.items() if f is not None}
    for f in live.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in live}
    for _ in range(3 if quick else 9):
        for k, f in live.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    print(f"rollout of specs/ppo_cartpole.yaml's policy: {n_envs} CartPole copies x {STEPS} steps, median of repeats")
    print(f"{'loop':<32}{'env steps/s':>14}{'us per vector step':>22}")
    for k, ts in times.items():
        sec = statistics.median(ts)
        print(f"{k:<32}{n_envs * STEPS / sec:14,.0f}{sec / STEPS * 1e6:22.1f}")


if __name__ == "__main__":
    main()
