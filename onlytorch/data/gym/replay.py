"""``gym.replay``: an experience-replay buffer for DQN.

Before the first iteration the buffer fills with ``warmup`` transitions of uniformly random
actions. Every iteration then steps each environment copy ``env_steps`` times with an
epsilon-greedy policy (the spec's ``action`` node under no_grad, e.g. ``argmax(Q(s), axis=1)``,
replaced by a random action with probability epsilon, which decays linearly from
``epsilon_start`` to ``epsilon_end`` over ``epsilon_steps`` environment steps), and every phase
repetition reads a minibatch drawn uniformly from the last ``capacity`` transitions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field as Param
from pydantic import model_validator

from ... import checkpoint as ckpt
from ..batches import rng_entry, rng_from_array, rng_to_array
from ..sources import Field, FieldRow, FieldTable, Held, register, row_bytes
from .base import GYM_ROWS, OBS_SHAPE, GymData, GymLiveSource, GymParams, gym_fields, not_loaded
from .envs import env_spaces
from .policy import Policy, make_policy

if TYPE_CHECKING:
    from ...compile import Compiled


class ReplayParams(GymParams):
    envs: int = Param(1, gt=0, le=1024, description="environment copies stepped together")
    capacity: int = Param(50_000, gt=0, description="transitions kept (the oldest are overwritten)")
    warmup: int = Param(1_000, ge=0, description="transitions of random actions collected before training starts")
    env_steps: int = Param(1, gt=0, description="steps of every environment copy per training iteration")
    epsilon_start: float = Param(1.0, ge=0, le=1, description="exploration rate at the first training step")
    epsilon_end: float = Param(0.05, ge=0, le=1, description="exploration rate after the decay")
    epsilon_steps: int = Param(10_000, gt=0, description="environment steps over which epsilon decays linearly")

    @model_validator(mode="after")
    def _fits(self) -> ReplayParams:
        if self.warmup > self.capacity:
            raise ValueError(f"warmup ({self.warmup}) cannot exceed capacity ({self.capacity})")
        return self


# The fields a replay buffer adds to every gym source's.
_REPLAY_ROWS = (
    FieldRow("next_obs", "float", OBS_SHAPE, "the observation the step reached (the final one where an episode ended)"),
    FieldRow("terminated", "float", (), "1.0 where the episode ended with no future (not a time limit), else 0.0"),
)


def _replay_fields(p: ReplayParams) -> dict[str, Field]:
    next_obs, terminated = _REPLAY_ROWS
    shape = env_spaces(p.env, p.env_kwargs).obs_shape
    return gym_fields(p, {"next_obs": Field(shape, "float", next_obs.doc), "terminated": terminated.field(p)})


class Replay(GymData):
    """The buffer, the environments that fill it and the minibatches drawn from it."""

    def __init__(self, p: ReplayParams, policy: Policy, batch_size: int, seed: int, dtype: Any) -> None:
        super().__init__(p, policy, batch_size, seed, dtype)
        self.p: ReplayParams = p
        spaces = env_spaces(p.env, p.env_kwargs)
        self.n_actions = spaces.n_actions
        self.rng = np.random.default_rng(seed + 104729)
        shape = spaces.obs_shape
        self.arrays = {
            "obs": np.zeros((p.capacity, *shape), dtype=self.dtype),
            "action": np.zeros(p.capacity, dtype=np.int64),
            "reward": np.zeros(p.capacity, dtype=self.dtype),
            "next_obs": np.zeros((p.capacity, *shape), dtype=self.dtype),
            "terminated": np.zeros(p.capacity, dtype=self.dtype),
        }
        self.size = 0
        self.position = 0
        self.explore_steps = 0  # environment steps taken after the warmup (epsilon's clock)

    @property
    def batches_per_epoch(self) -> int:
        return 1

    def epsilon(self) -> float:
        frac = min(1.0, self.explore_steps / self.p.epsilon_steps)
        return self.p.epsilon_start + frac * (self.p.epsilon_end - self.p.epsilon_start)

    def begin_iteration(self) -> None:
        if self.env.steps == 0 and self.p.warmup:
            while self.size < self.p.warmup:
                self._step(random=True)
        for _ in range(self.p.env_steps):
            self._step(random=False)
            self.explore_steps += self.p.envs

    def _step(self, random: bool) -> None:
        obs = self.env.current()
        explore = np.ones(self.p.envs, dtype=bool) if random else self.rng.random(self.p.envs) < self.epsilon()
        if explore.all():
            actions = self.rng.integers(self.n_actions, size=self.p.envs)
        else:
            actions, _ = self.policy.run(obs)
            actions = np.where(explore, self.rng.integers(self.n_actions, size=self.p.envs), actions)
        step = self.env.step(actions)
        self.add(obs, actions, step.reward, step.final_obs, step.terminated)

    def add(
        self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray, next_obs: np.ndarray, terminated: np.ndarray
    ) -> None:
        """Store a batch of transitions, overwriting the oldest when the buffer is full."""
        for i in range(len(obs)):
            j = self.position
            a = self.arrays
            a["obs"][j], a["action"][j], a["reward"][j] = obs[i], action[i], reward[i]
            a["next_obs"][j], a["terminated"][j] = next_obs[i], terminated[i]
            self.position = (j + 1) % self.p.capacity
            self.size = min(self.size + 1, self.p.capacity)

    def next_batch(self) -> dict[str, np.ndarray]:
        idx = self.rng.integers(self.size, size=self.batch_size)
        return {k: v[idx] for k, v in self.arrays.items()}

    def stats(self) -> dict[str, float]:
        return {**super().stats(), "epsilon": self.epsilon(), "buffer": float(self.size)}

    def state(self) -> dict[str, np.ndarray]:
        out = super().state()
        out.update({f"buffer/{k}": v[: self.size] for k, v in self.arrays.items()})
        out["rng"] = rng_to_array(self.rng)
        out["counters"] = np.array([self.size, self.position, self.explore_steps], dtype=np.int64)
        return out

    def check_state(self, state: dict[str, np.ndarray], where: str = "") -> None:
        """Raise CheckpointError (naming the entry) unless state is one this buffer's state()
        could have written; changes nothing."""
        super().check_state(state, where)
        capacity = self.p.capacity
        size, position, _ = (int(v) for v in ckpt.integers(state, "counters", where, shape=(3,)))
        if size > capacity or position >= capacity or (size < capacity and position != size):
            raise ckpt.CheckpointError(
                f"entry '{where}counters' holds size {size} and position {position}, which a buffer of "
                f"capacity {capacity} cannot have"
            )
        for k, v in self.arrays.items():
            shape = (size, *v.shape[1:])
            if k == "action":
                ckpt.integers(state, f"buffer/{k}", where, shape=shape, low=0, high=self.n_actions)
            else:
                ckpt.floats(state, f"buffer/{k}", where, shape=shape, what=f"the buffer's {k}")
        rng_entry(state, "rng", where, ckpt.CheckpointError)
        known = {"counters", "rng"} | {f"buffer/{k}" for k in self.arrays} | {k for k in state if k.startswith("env/")}
        ckpt.unexpected(state, known, where)

    def restore(self, state: dict[str, np.ndarray], where: str = "") -> None:
        """Continue from a state() (checked first: a bad one changes nothing)."""
        self.check_state(state, where)
        super().restore(state, where)
        self.size, self.position, self.explore_steps = (int(v) for v in state["counters"])
        for k, v in self.arrays.items():
            v[: self.size] = state[f"buffer/{k}"]
        self.rng = rng_from_array(state["rng"])


class ReplaySource(GymLiveSource):
    counter_stats = (*GymLiveSource.counter_stats, "buffer")  # the transitions it holds (see Replay.stats)

    def make_live(self, p: Any, compiled: Compiled) -> Replay:
        data = compiled.spec.data
        assert data is not None
        return Replay(p, make_policy(p, compiled), data.batch_size, compiled.spec.seed, compiled.graph.dtype)

    def check_compiled(self, p: Any, ctx: Any) -> None:
        super().check_compiled(p, ctx)
        train = ctx.spec.train
        if train is None:
            return
        for pi, ph in enumerate(train.schedule):
            if ph.epochs is not None:
                ctx.error(
                    "E-ARG",
                    f"phase {ph.name}: epochs needs a fixed set of samples; a replay buffer serves one random "
                    "minibatch per repetition (use repeat)",
                    ("train", "schedule", ctx.phase_index[pi] if ctx.phase_index else pi, "epochs"),
                )

    def describe(self, p: Any, compiled: Compiled) -> list[str]:
        return [
            "",
            self.head(p, compiled),
            f"  replay buffer of {p.capacity:,} transitions; {p.warmup:,} random ones first; each iteration "
            f"{p.envs * p.env_steps:,} step(s) acting with {p.action} under no_grad, epsilon-greedy "
            f"({p.epsilon_start:g} -> {p.epsilon_end:g} over {p.epsilon_steps:,} environment steps)",
        ]

    def memory(self, p: Any, split: str, fields: Mapping[str, Field], itemsize: int) -> list[Held]:
        row = row_bytes(fields, itemsize)
        return [Held(f"replay buffer ({p.capacity:,} transitions)", p.capacity * row, "capacity")]


register(
    ReplaySource(
        name="gym.replay",
        params=ReplayParams,
        fields=_replay_fields,
        table=FieldTable(GYM_ROWS + _REPLAY_ROWS),
        load=not_loaded,
        doc="An experience-replay buffer filled by an epsilon-greedy policy in a gymnasium environment (DQN).",
        extra="gym",
    )
)
