"""Cases for the categorical distribution ops and PPO's clipped surrogate, against
torch.distributions.Categorical and the torch expression of the surrogate. See harness.py for the
case format; the sampling statistics are in tests/test_distributions.py."""

from __future__ import annotations

import numpy as np
import torch
from torch.distributions import Categorical

from .harness import Case, F, I


def _log_prob(x, a):
    return Categorical(logits=x).log_prob(a)


def _entropy(x):
    return Categorical(logits=x).entropy()


LOG_PROB_CASES = [
    Case(
        "categorical_log_prob-2d",
        "categorical_log_prob",
        [F((4, 5)), I((4,), high=5)],
        lambda g, x, a: g.categorical_log_prob(x, a),
        _log_prob,
    ),
    Case(
        "categorical_log_prob-1d",
        "categorical_log_prob",
        [F((5,)), I((), high=5)],
        lambda g, x, a: g.categorical_log_prob(x, a),
        _log_prob,
    ),
    Case(
        "categorical_log_prob-batch",
        "categorical_log_prob",
        [F((None, 3)), I((None,), high=3)],
        lambda g, x, a: g.categorical_log_prob(x, a),
        _log_prob,
        batch=6,
    ),
    Case(
        "categorical_log_prob-3d",
        "categorical_log_prob",
        [F((2, 3, 4)), I((2, 3), high=4)],
        lambda g, x, a: g.categorical_log_prob(x, a),
        _log_prob,
    ),
    Case(
        "categorical_log_prob-large",
        "categorical_log_prob",
        [F((3, 4), gen="large"), I((3,), high=4)],
        lambda g, x, a: g.categorical_log_prob(x, a),
        _log_prob,
        fd=False,
        rtol=1e-9,
    ),
    Case(
        "categorical_log_prob-mean",
        ("categorical_log_prob", "mean"),
        [F((None, 4)), I((None,), high=4)],
        lambda g, x, a: -g.mean(g.categorical_log_prob(x, a)),
        lambda x, a: -_log_prob(x, a).mean(),
    ),
]

ENTROPY_CASES = [
    Case("categorical_entropy-2d", "categorical_entropy", [F((4, 5))], lambda g, x: g.categorical_entropy(x), _entropy),
    Case("categorical_entropy-1d", "categorical_entropy", [F((6,))], lambda g, x: g.categorical_entropy(x), _entropy),
    Case(
        "categorical_entropy-batch",
        "categorical_entropy",
        [F((None, 3))],
        lambda g, x: g.categorical_entropy(x),
        _entropy,
        batch=5,
    ),
    Case(
        "categorical_entropy-3d",
        "categorical_entropy",
        [F((2, 3, 4))],
        lambda g, x: g.categorical_entropy(x),
        _entropy,
    ),
    Case(
        "categorical_entropy-large",
        "categorical_entropy",
        [F((3, 4), gen="large")],
        lambda g, x: g.categorical_entropy(x),
        _entropy,
        fd=False,
        atol=1e-10,
    ),
]


def _ratios(clip: float):
    """Probability ratios at least 0.05 away from the clip bounds 1 +- clip, on both sides."""

    def gen(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        bands = [(0.3, 1.0 - clip - 0.05), (1.0 - clip + 0.05, 1.0 + clip - 0.05), (1.0 + clip + 0.05, 2.0)]
        which = rng.integers(0, 3, shape)
        lo = np.choose(which, [b[0] for b in bands])
        hi = np.choose(which, [b[1] for b in bands])
        return rng.uniform(lo, hi)

    return gen


def _ppo_ref(clip: float):
    def ref(ratio, adv):
        return torch.min(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)

    return ref


# PPO's loss from a policy's logits: the ratio exp(logp - old_logp) lands in every band.
_PPO_LOGITS = np.random.default_rng(7).standard_normal((6, 3))
_PPO_ACTIONS = np.array([0, 2, 1, 1, 0, 2])
_PPO_LOGP = (_PPO_LOGITS - np.log(np.exp(_PPO_LOGITS).sum(1, keepdims=True)))[np.arange(6), _PPO_ACTIONS]
_PPO_OLD = _PPO_LOGP - np.log([0.5, 0.95, 1.1, 1.5, 0.7, 1.3])
_PPO_ADV = np.array([1.0, -0.5, 0.8, -1.2, -0.6, 0.4])


def _ppo_loss_ref(x, a, old, adv):
    ratio = torch.exp(_log_prob(x, a) - old)
    return -torch.min(ratio * adv, torch.clamp(ratio, 0.8, 1.2) * adv).mean()


PPO_CASES = [
    Case(
        "ppo_clip-1d",
        "ppo_clip",
        [F((12,), gen=_ratios(0.2)), F((12,), gen="nonzero")],
        lambda g, r, adv: g.ppo_clip(r, adv),
        _ppo_ref(0.2),
    ),
    Case(
        "ppo_clip-batch",
        "ppo_clip",
        [F((None,), gen=_ratios(0.1)), F((None,), gen="nonzero")],
        lambda g, r, adv: g.ppo_clip(r, adv, clip=0.1),
        _ppo_ref(0.1),
        batch=10,
    ),
    Case(
        "ppo_clip-2d-broadcast",
        "ppo_clip",
        [F((3, 4), gen=_ratios(0.3)), F((3, 1), gen="nonzero")],
        lambda g, r, adv: g.ppo_clip(r, adv, clip=0.3),
        _ppo_ref(0.3),
    ),
    Case(
        "ppo_clip-loss",
        ("ppo_clip", "categorical_log_prob", "exp", "mean"),
        [
            F((6, 3), value=_PPO_LOGITS),
            I((6,), value=_PPO_ACTIONS),
            F((6,), value=_PPO_OLD, grad=False),
            F((6,), value=_PPO_ADV, grad=False),
        ],
        lambda g, x, a, old, adv: -g.mean(g.ppo_clip(g.exp(g.categorical_log_prob(x, a) - old), adv, clip=0.2)),
        _ppo_loss_ref,
    ),
]

# Sampling is random; with every other logit 1000 below the largest, the draw is certain (Gumbel
# noise never exceeds ~40), so it equals argmax, carries no gradient, and keeps int64.
_CERTAIN = np.array([[0.0, -1000.0, -1000.0], [-1000.0, 5.0, -995.0], [-2000.0, -2000.0, -1000.0], [3.0, -997.0, -1e4]])

SAMPLE_CASES = [
    Case(
        "categorical_sample-certain",
        "categorical_sample",
        [F((4, 3), value=_CERTAIN)],
        lambda g, x: g.categorical_sample(x),
        lambda x: torch.argmax(x, -1),
        diff=False,
    ),
    Case(
        "categorical_sample-1d",
        "categorical_sample",
        [F((3,), value=_CERTAIN[1])],
        lambda g, x: g.categorical_sample(x),
        lambda x: torch.argmax(x, -1),
        diff=False,
    ),
]

CASES = LOG_PROB_CASES + ENTROPY_CASES + PPO_CASES + SAMPLE_CASES
