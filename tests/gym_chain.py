"""A tiny deterministic gymnasium environment for the gym-source tests, where every return can be
computed by hand: the observation is [t, 1] at step t of the episode, the reward of step t is
t + 1 + action, the episode terminates after ``term_at`` steps, and gym.make's
``max_episode_steps`` truncates it earlier."""

from __future__ import annotations

import numpy as np

gym = __import__("pytest").importorskip("gymnasium")

CHAIN = "OnlytorchTest/Chain-v0"


class ChainEnv(gym.Env):
    def __init__(self, term_at: int = 1000) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.term_at = term_at
        self.state = np.zeros(1)  # [t]: the whole state, as classic-control environments keep it

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        self.state = np.zeros(1)
        return self._obs(), {}

    def step(self, action):  # type: ignore[override]
        t = int(self.state[0])
        self.state = np.array([t + 1.0])
        return self._obs(), float(t + 1 + int(action)), t + 1 >= self.term_at, False, {}

    def _obs(self) -> np.ndarray:
        return np.array([self.state[0], 1.0], dtype=np.float32)


if CHAIN not in gym.registry:
    gym.register(id=CHAIN, entry_point=ChainEnv)
