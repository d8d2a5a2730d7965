"""Returns and generalised advantage estimates (GAE, Schulman et al. 2016) of a rollout.

Arrays are (T, E): T steps of E environments. Termination and truncation differ: a terminated
episode has no future (its last step bootstraps from nothing), while a truncated one (a time
limit) was cut short, so its last step bootstraps from the critic's value of the observation it
reached. Either way the recursion does not cross into the next episode."""

from __future__ import annotations

import numpy as np


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns (advantages + values).

    ``values[t]`` is V(s_t); ``next_values[t]`` is V of the observation step t reached (the final
    observation where an episode ended, the next state otherwise; at the last step the bootstrap).

        delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t
        A_t     = delta_t + gamma * lam * (1 - (terminated_t or truncated_t)) * A_{t+1},  A_T = 0

    With lam = 1 the returns are the discounted rewards-to-go, bootstrapped where the rollout or
    a truncated episode ends; with lam = 0 they are one-step TD targets."""
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    next_values = np.asarray(next_values, dtype=np.float64)
    term = np.asarray(terminated, dtype=bool)
    ended = term | np.asarray(truncated, dtype=bool)
    if not (rewards.shape == values.shape == next_values.shape == term.shape == ended.shape):
        raise ValueError(
            f"gae: rewards {rewards.shape}, values {values.shape}, next_values {next_values.shape}, "
            f"terminated {term.shape} and truncated {np.shape(truncated)} must have one shape (T, E)"
        )
    deltas = rewards + gamma * np.where(term, 0.0, next_values) - values
    carry = np.where(ended, 0.0, gamma * lam)
    adv = np.empty_like(deltas)
    last = np.zeros(deltas.shape[1:])
    for t in range(len(deltas) - 1, -1, -1):
        last = deltas[t] + carry[t] * last
        adv[t] = last
    return adv, adv + values


def normalize(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """(x - mean) / (std + eps): PPO's per-rollout advantage normalisation."""
    return (x - x.mean()) / (x.std() + eps)
