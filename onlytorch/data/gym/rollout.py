"""``gym.rollout``: on-policy experience for actor-critic and PPO.

Every training iteration starts with a collection: the policy acts for ``steps`` steps in each of
``envs`` environments under no_grad (the spec's ``action`` node, and its ``log_prob`` and
``value`` nodes when named), and the rewards become returns and GAE advantages computed from the
critic's values, which are plain numbers here, so no gradient can reach the critic through an
advantage. The iteration's phases then read minibatches of these ``envs * steps`` transitions
(a phase with ``epochs: K`` makes K passes over them, reshuffled each pass)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field as Param

from ...checkpoint import CheckpointError, floats, integers, unexpected, with_prefix
from ...checkpoint import count as ckpt_count
from ..batches import Batches, count_batches, rng_entry, rng_from_array, rng_to_array
from ..sources import DataError, Field, FieldRow, FieldTable, Held, register, row_bytes
from .advantages import gae, normalize
from .base import GYM_ROWS, GymData, GymLiveSource, GymParams, gym_fields, not_loaded
from .envs import env_spaces
from .policy import Policy, make_policy

if TYPE_CHECKING:
    from ...compile import Compiled


class RolloutParams(GymParams):
    steps: int = Param(128, gt=0, description="steps of every environment copy per collection")
    log_prob: str | None = Param(
        None, description="a node recorded as field log_prob: the taken action's log-probability"
    )
    value: str | None = Param(None, description="the critic's value node: recorded as field value, and used for GAE")
    gamma: float = Param(0.99, ge=0, le=1, description="discount factor")
    lam: float = Param(0.95, ge=0, le=1, description="GAE's lambda (1: discounted returns, 0: one-step TD)")
    normalize_advantages: bool = Param(False, description="rescale each collection's advantages to mean 0, std 1")


# The fields a rollout adds to every gym source's (log_prob and value: when the spec names those nodes).
_ROLLOUT_ROWS = FieldTable(
    (
        FieldRow("terminated", "float", (), "1.0 where the episode ended here (no future), else 0.0"),
        FieldRow("truncated", "float", (), "1.0 where a time limit cut the episode here, else 0.0"),
        FieldRow("advantage", "float", (), "the GAE advantage (0 with no value node: then it is the return)"),
        FieldRow("return", "float", (), "the discounted return (advantage + value), bootstrapped at cuts"),
        FieldRow("log_prob", "float", (), "the log_prob node's value when acting (the old policy's)", when="log_prob"),
        FieldRow("value", "float", (), "the value node's value when acting", when="value"),
    )
)


def _rollout_fields(p: RolloutParams) -> dict[str, Field]:
    return gym_fields(p, _ROLLOUT_ROWS(p))


class Rollout(GymData):
    """Collects, holds and serves one iteration's transitions."""

    def __init__(self, p: RolloutParams, policy: Policy, batch_size: int, shuffle: bool, seed: int, dtype: Any) -> None:
        super().__init__(p, policy, batch_size, seed, dtype)
        self.p: RolloutParams = p
        self.shuffle = shuffle
        self._shuffle_rng = np.random.default_rng(seed + 7919)
        self.buffer: dict[str, np.ndarray] = {}
        self.batches: Batches | None = None
        self.collections = 0
        self.extra = [k for k in ("log_prob", "value") if getattr(p, k) is not None]

    @property
    def size(self) -> int:
        return self.p.envs * self.p.steps

    @property
    def batches_per_epoch(self) -> int:
        return count_batches(self.size, self.batch_size)

    def begin_iteration(self) -> None:
        self.buffer = self.collect()
        self.collections += 1
        self.batches = Batches(
            self.buffer,
            self.batch_size,
            shuffle=self.shuffle,
            seed=int(self._shuffle_rng.integers(2**63)),
        )

    def next_batch(self) -> dict[str, np.ndarray]:
        assert self.batches is not None, "begin_iteration() collects before batches are drawn"
        return self.batches.next_batch()

    def collect(self) -> dict[str, np.ndarray]:
        """``steps`` steps of every environment; arrays flattened time-major to (steps * envs, ...)."""
        p, T, E = self.p, self.p.steps, self.p.envs
        obs = self.env.current()
        obs_buf = np.empty((T, E, *obs.shape[1:]), dtype=self.dtype)
        act = np.empty((T, E), dtype=np.int64)
        rew, term, trunc = np.empty((T, E)), np.zeros((T, E), dtype=bool), np.zeros((T, E), dtype=bool)
        extra = {k: np.zeros((T, E)) for k in self.extra}
        next_values = np.zeros((T, E))
        for t in range(T):
            obs_buf[t] = obs
            actions, vals = self.policy.run(obs, self.extra)
            act[t] = actions
            for k, v in vals.items():
                extra[k][t] = v
            step = self.env.step(actions)
            rew[t], term[t], trunc[t] = step.reward, step.terminated, step.truncated
            if "value" in extra and trunc[t].any():
                # a time limit cut these episodes: their returns bootstrap from the value of the
                # observation they reached, which the next step's values (a new episode) are not.
                next_values[t, trunc[t]] = self.policy.value_of("value", step.final_obs[trunc[t]])
            obs = step.obs
        if "value" in extra:
            values = extra["value"]
            next_values[:-1] = np.where(trunc[:-1], next_values[:-1], values[1:])
            next_values[-1] = np.where(trunc[-1], next_values[-1], self.policy.value_of("value", obs))
        else:
            values = np.zeros((T, E))
        adv, ret = gae(rew, values, next_values, term, trunc, p.gamma, p.lam)
        if p.normalize_advantages:
            adv = normalize(adv)
        out = {
            "obs": obs_buf,
            "action": act,
            "reward": rew,
            "terminated": term.astype(np.float64),
            "truncated": trunc.astype(np.float64),
            "advantage": adv,
            "return": ret,
            **extra,
        }
        flat = {}
        for k, v in out.items():
            v = v.reshape(T * E, *v.shape[2:])
            flat[k] = v if v.dtype == np.int64 else v.astype(self.dtype)
        return flat

    def state(self) -> dict[str, np.ndarray]:
        out = super().state()
        out["shuffle_rng"] = rng_to_array(self._shuffle_rng)
        out["collections"] = np.array(self.collections, dtype=np.int64)
        if self.batches is not None:
            out.update({f"buffer/{k}": v for k, v in self.buffer.items()})
            out.update({f"batches/{k}": v for k, v in self.batches.state().items()})
        return out

    def check_state(self, state: dict[str, np.ndarray], where: str = "") -> None:
        super().check_state(state, where)
        rng_entry(state, "shuffle_rng", where, CheckpointError)
        ckpt_count(state, "collections", where)
        buffer, batches = with_prefix(state, "buffer"), with_prefix(state, "batches")
        known = {"shuffle_rng", "collections"} | {k for k in state if k.startswith("env/")}
        if buffer or batches:
            obs_shape = tuple(self.env.envs[0].observation_space.shape or ())
            fields = ("obs", "action", "reward", "terminated", "truncated", "advantage", "return", *self.extra)
            for k in fields:
                shape = (self.size, *obs_shape) if k == "obs" else (self.size,)
                if k == "action":
                    integers(buffer, k, f"{where}buffer/", shape=shape, low=0, high=self._n_actions())
                else:
                    floats(buffer, k, f"{where}buffer/", shape=shape, what=f"the rollout's {k}")
            unexpected(buffer, set(fields), f"{where}buffer/")
            try:
                Batches(buffer, self.batch_size, shuffle=self.shuffle).check_state(batches, f"{where}batches/")
            except DataError as e:
                raise CheckpointError(str(e)) from None
            known |= {f"buffer/{k}" for k in buffer} | {f"batches/{k}" for k in batches}
        unexpected(state, known, where)

    def _n_actions(self) -> int:
        return env_spaces(self.p.env, self.p.env_kwargs).n_actions

    def restore(self, state: dict[str, np.ndarray], where: str = "") -> None:
        """Continue from a state() (checked first: a bad one changes nothing)."""
        self.check_state(state, where)
        super().restore(state, where)
        self._shuffle_rng = rng_from_array(state["shuffle_rng"])
        self.collections = int(state["collections"])
        buffer = with_prefix(state, "buffer")
        if buffer:
            self.buffer = buffer
            self.batches = Batches(buffer, self.batch_size, shuffle=self.shuffle)
            self.batches.restore(with_prefix(state, "batches"))


class RolloutSource(GymLiveSource):
    def make_live(self, p: Any, compiled: Compiled) -> Rollout:
        data = compiled.spec.data
        assert data is not None
        return Rollout(
            p, make_policy(p, compiled), data.batch_size, data.shuffle, compiled.spec.seed, compiled.graph.dtype
        )

    def describe(self, p: Any, compiled: Compiled) -> list[str]:
        recorded = [f"{k} = {getattr(p, k)}" for k in ("log_prob", "value") if getattr(p, k)]
        return [
            "",
            self.head(p, compiled),
            f"  each iteration: {p.envs} copies x {p.steps} steps = {p.envs * p.steps:,} transitions, "
            f"acting with {p.action} under no_grad" + (f"; records {', '.join(recorded)}" if recorded else ""),
            f"  returns and GAE advantages: gamma {p.gamma:g}, lambda {p.lam:g}"
            + (", normalised per collection" if p.normalize_advantages else ""),
        ]

    def memory(self, p: Any, split: str, fields: Mapping[str, Field], itemsize: int) -> list[Held]:
        count = p.envs * p.steps
        row = row_bytes(fields, itemsize)
        # collect() fills (steps, envs) float64 arrays (rewards, values, advantages, ...) before the cast
        scratch = count * (row + 8 * (6 + sum(getattr(p, k) is not None for k in ("log_prob", "value"))))
        return [
            Held(f"rollout ({p.envs} x {p.steps:,} transitions)", count * row, "steps"),
            Held("collecting a rollout", scratch, "steps", transient=True),
        ]


register(
    RolloutSource(
        name="gym.rollout",
        params=RolloutParams,
        fields=_rollout_fields,
        table=FieldTable(GYM_ROWS + _ROLLOUT_ROWS.rows),
        load=not_loaded,
        doc="On-policy rollouts of a gymnasium environment, collected under no_grad at the start of "
        "every iteration, with returns and GAE advantages (actor-critic, PPO).",
        extra="gym",
    )
)
