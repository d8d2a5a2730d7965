"""GAE and returns (onlytorch.data.gym.advantages) against a direct computation: each advantage as the
explicit sum of discounted TD errors up to the end of its episode or of the rollout, with
termination (no future) and truncation (bootstrap from the final observation's value) apart."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onlytorch.data.gym.advantages import gae, normalize


def direct(rewards, values, next_values, terminated, truncated, gamma, lam):
    T, E = rewards.shape
    adv = np.zeros((T, E))
    for e in range(E):
        for t in range(T):
            total, factor = 0.0, 1.0
            for k in range(t, T):
                future = 0.0 if terminated[k, e] else gamma * next_values[k, e]
                total += factor * (rewards[k, e] + future - values[k, e])
                if terminated[k, e] or truncated[k, e]:
                    break
                factor *= gamma * lam
            adv[t, e] = total
    return adv, adv + values


def rollout(seed: int, T: int, E: int, p_end: float = 0.15):
    rng = np.random.default_rng(seed)
    ends = rng.random((T, E)) < p_end
    terminated = ends & (rng.random((T, E)) < 0.5)
    truncated = ends & ~terminated
    return (
        rng.normal(size=(T, E)),
        rng.normal(size=(T, E)),
        rng.normal(size=(T, E)),
        terminated,
        truncated,
    )


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    seed=st.integers(0, 2**31),
    T=st.integers(1, 12),
    E=st.integers(1, 4),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
)
def test_gae_matches_the_direct_sum(seed, T, E, gamma, lam):
    arrays = rollout(seed, T, E)
    adv, ret = gae(*arrays, gamma=gamma, lam=lam)
    want_adv, want_ret = direct(*arrays, gamma, lam)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-10, atol=1e-10)


def test_lambda_one_gives_discounted_rewards_to_go_bootstrapped_at_the_end():
    r = np.array([[1.0], [2.0], [3.0]])
    v = np.array([[0.5], [0.25], [0.125]])
    nv = np.array([[0.25], [0.125], [10.0]])  # the last: V of the observation the rollout stopped at
    none = np.zeros((3, 1), dtype=bool)
    _, ret = gae(r, v, nv, none, none, gamma=0.5, lam=1.0)
    np.testing.assert_allclose(ret[:, 0], [1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 10, 2 + 0.5 * 3 + 0.25 * 10, 3 + 0.5 * 10])


def test_lambda_zero_gives_one_step_td_targets():
    r, v, nv, term, trunc = rollout(3, 6, 2)
    _, ret = gae(r, v, nv, term, trunc, gamma=0.9, lam=0.0)
    np.testing.assert_allclose(ret, r + 0.9 * np.where(term, 0.0, nv))


def test_termination_drops_the_future_but_truncation_bootstraps_from_the_final_value():
    # One environment, two steps, the first ends its episode; the second belongs to a new one.
    r = np.array([[1.0], [1.0]])
    v = np.array([[0.0], [0.0]])
    nv = np.array([[5.0], [7.0]])  # V(final observation of episode 1), V(bootstrap)
    step1_ends = np.array([[True], [False]])
    none = np.zeros((2, 1), dtype=bool)
    _, ret_term = gae(r, v, nv, step1_ends, none, gamma=0.5, lam=1.0)
    _, ret_trunc = gae(r, v, nv, none, step1_ends, gamma=0.5, lam=1.0)
    # Either way the new episode's return does not flow back into the old one.
    assert ret_term[0, 0] == 1.0  # terminated: nothing after
    assert ret_trunc[0, 0] == 1.0 + 0.5 * 5.0  # truncated: bootstrap from the final observation
    assert ret_term[1, 0] == ret_trunc[1, 0] == 1.0 + 0.5 * 7.0


def test_shapes_must_agree():
    a = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"must have one shape \(T, E\)"):
        gae(a, a, np.zeros((3, 1)), a.astype(bool), a.astype(bool), 0.9, 0.9)


def test_normalize_gives_mean_zero_std_one():
    x = np.random.default_rng(0).normal(3.0, 5.0, size=1000)
    z = normalize(x)
    assert abs(z.mean()) < 1e-12 and abs(z.std() - 1.0) < 1e-6
