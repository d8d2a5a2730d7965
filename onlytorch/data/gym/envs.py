"""Gymnasium environments for rollouts: a seeded vector of environments that resets each one
as its episode ends, keeps the true last observation of every finished episode (a truncated
episode's return bootstraps from it) and counts the episodes' returns.

gymnasium is the ``gym`` extra; it is imported only when an environment is made."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import checkpoint as ckpt
from ...suggest import did_you_mean_suffix
from ..batches import rng_entry, rng_from_array, rng_to_array
from ..sources import DataError


def gymnasium() -> Any:
    try:
        import gymnasium as gym
    except ImportError:
        raise DataError(
            "gym sources need gymnasium, which is not installed: pip install 'onlytorch[gym]'", param="env"
        ) from None
    return gym


def check_env_kwargs(env_id: str, kwargs: Mapping[str, Any] | None) -> None:
    """DataError unless every keyword argument is a name with a plain value (number, string, boolean,
    null) and none asks for rendering: a list given where the environment expects a number, or a
    render mode that needs a display, would only fail later, at reset or in the middle of a step."""
    for key, value in dict(kwargs or {}).items():
        if not isinstance(key, str):
            raise DataError(f"environment {env_id!r}: env_kwargs keys are names, not {key!r}", param="env_kwargs")
        if key == "render_mode":
            raise DataError(
                f"environment {env_id!r}: env_kwargs.render_mode is not allowed: rollouts run headless and are "
                "never rendered; remove it",
                param="env_kwargs",
            )
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise DataError(
                f"environment {env_id!r}: env_kwargs.{key} is a {type(value).__name__}; "
                "values are numbers, strings, booleans or null",
                param="env_kwargs",
            )


def make_env(env_id: str, kwargs: Mapping[str, Any] | None = None) -> Any:
    check_env_kwargs(env_id, kwargs)
    if ":" in env_id:
        # gymnasium reads "module:Env-v0" as "import module, then make Env-v0": a spec never runs code.
        raise DataError(
            f"environment id {env_id!r} contains ':', which gymnasium reads as a Python module to import; "
            "a spec only names registered environments, e.g. CartPole-v1",
            param="env",
        )
    gym = gymnasium()
    try:
        # The passive checker costs a few microseconds a step and checks only what make() built.
        return gym.make(env_id, disable_env_checker=True, **dict(kwargs or {}))
    except (gym.error.NameNotFound, gym.error.NamespaceNotFound, gym.error.VersionNotFound, gym.error.DeprecatedEnv):
        hint = did_you_mean_suffix(env_id, sorted(gym.registry)) or " (gymnasium.registry lists the known ids)"
        raise DataError(f"unknown environment {env_id!r}{hint}", param="env") from None
    except gym.error.Error as e:
        raise DataError(f"environment {env_id!r}: {e}", param="env") from None
    except TypeError as e:
        raise DataError(f"environment {env_id!r} refuses its env_kwargs: {e}", param="env_kwargs") from None
    except (ValueError, ImportError) as e:
        raise DataError(f"environment {env_id!r} cannot be made: {e}", param="env") from None


@dataclass(frozen=True)
class Spaces:
    obs_shape: tuple[int, ...]
    n_actions: int
    max_episode_steps: int | None


@functools.lru_cache(maxsize=32)
def _spaces(env_id: str, kwargs: tuple[tuple[str, Any], ...]) -> Spaces:
    gym = gymnasium()
    env = make_env(env_id, dict(kwargs))
    try:
        obs, act = env.observation_space, env.action_space
        if not isinstance(act, gym.spaces.Discrete):
            raise DataError(
                f"environment {env_id!r} has actions {act}; gym sources support discrete actions (Discrete(n))",
                param="env",
            )
        if not isinstance(obs, gym.spaces.Box):
            raise DataError(
                f"environment {env_id!r} has observations {obs}; gym sources support boxes of numbers (Box)",
                param="env",
            )
        steps = env.spec.max_episode_steps if env.spec is not None else None
        try:  # an environment built from bad env_kwargs often fails only here; better now than mid-training
            env.reset(seed=0)
        except Exception as e:  # the environment is foreign code: whatever it raises is its refusal
            raise DataError(
                f"environment {env_id!r} fails to reset with env_kwargs {dict(kwargs)}: {type(e).__name__}: {e}",
                param="env_kwargs",
            ) from None
        return Spaces(tuple(int(d) for d in obs.shape), int(act.n), steps)
    finally:
        env.close()


def env_spaces(env_id: str, kwargs: Mapping[str, Any] | None = None) -> Spaces:
    """Observation shape and number of actions of an environment (made and reset once, then cached)."""
    check_env_kwargs(env_id, kwargs)  # also makes the kwargs hashable for the cache: plain values only
    return _spaces(env_id, tuple(sorted(dict(kwargs or {}).items())))


@dataclass
class Step:
    """What one step of every environment gives. ``obs`` is what the policy sees next (a new
    episode's first observation where one ended); ``final_obs`` is the true observation after the
    step, which differs from ``obs`` exactly where ``terminated | truncated``."""

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray


class VectorEnv:
    """``n`` copies of an environment stepped together. Environment ``i`` is first reset with
    seed ``seed + i``; later resets continue its own generator, so a run is reproducible."""

    def __init__(self, env_id: str, n: int, seed: int, kwargs: Mapping[str, Any] | None = None) -> None:
        self.env_id = env_id
        self.envs = [make_env(env_id, kwargs) for _ in range(n)]
        self.n = n
        self.seed = seed
        self.obs: np.ndarray | None = None
        self.running_return = np.zeros(n)
        self.running_length = np.zeros(n, dtype=np.int64)
        self.returns: list[float] = []  # of every finished episode, in order
        self.lengths: list[int] = []
        self.steps = 0  # environment steps taken (summed over the copies)

    def reset(self) -> np.ndarray:
        self.obs = np.stack([np.asarray(e.reset(seed=self.seed + i)[0]) for i, e in enumerate(self.envs)])
        self.running_return[:] = 0.0
        self.running_length[:] = 0
        return self.obs

    def current(self) -> np.ndarray:
        """The observations the policy acts on next (resetting every copy on first use)."""
        return self.reset() if self.obs is None else self.obs

    def step(self, actions: Sequence[int] | np.ndarray) -> Step:
        obs = self.current()
        out_obs = np.empty_like(obs)
        final = np.empty_like(obs)
        reward = np.empty(self.n)
        term = np.zeros(self.n, dtype=bool)
        trunc = np.zeros(self.n, dtype=bool)
        for i, env in enumerate(self.envs):
            o, r, te, tr, _ = env.step(int(actions[i]))
            final[i] = o
            reward[i] = r
            term[i], trunc[i] = te, tr
            self.running_return[i] += r
            self.running_length[i] += 1
            if te or tr:
                self.returns.append(float(self.running_return[i]))
                self.lengths.append(int(self.running_length[i]))
                self.running_return[i] = 0.0
                self.running_length[i] = 0
                o, _ = env.reset()
            out_obs[i] = o
        self.steps += self.n
        self.obs = out_obs
        return Step(out_obs, reward, term, trunc, final)

    def close(self) -> None:
        for e in self.envs:
            e.close()

    # -------------------------------------------------------------- state (for checkpoints)

    def resumable(self) -> bool:
        """Whether state() captures the environments exactly: true for environments whose whole
        state is a numpy array ``state`` plus their generator (the classic-control ones)."""
        return all(isinstance(getattr(e.unwrapped, "state", None), np.ndarray) for e in self.envs)

    def state(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {
            "running_return": self.running_return.copy(),
            "running_length": self.running_length.copy(),
            "returns": np.asarray(self.returns, dtype=np.float64),
            "lengths": np.asarray(self.lengths, dtype=np.int64),
            "steps": np.array(self.steps, dtype=np.int64),
        }
        if self.obs is None:
            return out
        out["obs"] = self.obs.copy()
        if not self.resumable():
            return out
        for i, e in enumerate(self.envs):
            u = e.unwrapped
            out[f"env{i}/state"] = np.array(u.state, copy=True)
            out[f"env{i}/rng"] = rng_to_array(u.np_random)
            out[f"env{i}/elapsed"] = np.array(_elapsed(e), dtype=np.int64)
            beyond = getattr(u, "steps_beyond_terminated", None)
            out[f"env{i}/beyond"] = np.array(-1 if beyond is None else beyond, dtype=np.int64)
        return out

    def check_state(self, state: Mapping[str, np.ndarray], where: str = "") -> None:
        """Raise CheckpointError (naming the entry, prefixed by ``where``) unless state is one that
        state() of these environments could have written; changes nothing."""
        n = self.n
        known = {"running_return", "running_length", "returns", "lengths", "steps"}
        ckpt.floats(state, "running_return", where, shape=(n,))
        ckpt.integers(state, "running_length", where, shape=(n,))
        returns = ckpt.floats(state, "returns", where)
        if returns.ndim != 1:
            raise ckpt.CheckpointError(f"entry '{where}returns' is {ckpt.describe(returns)}, not a list of returns")
        ckpt.integers(state, "lengths", where, shape=returns.shape)
        ckpt.count(state, "steps", where)
        if "obs" in state:
            obs_shape = tuple(self.envs[0].observation_space.shape or ())
            obs = ckpt.entry(state, "obs", where)
            if obs.dtype.kind not in "biuf" or obs.shape != (n, *obs_shape) or not np.isfinite(obs).all():
                raise ckpt.CheckpointError(
                    f"entry '{where}obs' is {ckpt.describe(obs)}; the {self.env_id} observations of {n} "
                    f"environments are {(n, *obs_shape)} finite numbers"
                )
            known.add("obs")
            if "env0/state" not in state:
                raise ckpt.CheckpointError(
                    f"the checkpoint holds no state of the {self.env_id} environments ('{where}env0/state'; "
                    "only classic-control environments are saved exactly); start a new run"
                )
            for i in range(n):
                env_state = ckpt.floats(state, f"env{i}/state", where)
                if env_state.ndim != 1:
                    raise ckpt.CheckpointError(
                        f"entry '{where}env{i}/state' is {ckpt.describe(env_state)}, not an environment's state vector"
                    )
                rng_entry(state, f"env{i}/rng", where, ckpt.CheckpointError)
                ckpt.count(state, f"env{i}/elapsed", where)
                ckpt.count(state, f"env{i}/beyond", where, low=-1)
                known.update(f"env{i}/{k}" for k in ("state", "rng", "elapsed", "beyond"))
        ckpt.unexpected(state, known, where)

    def restore(self, state: Mapping[str, np.ndarray], where: str = "") -> None:
        """Continue from a state() (checked first: a bad one changes nothing)."""
        self.check_state(state, where)
        self.running_return = np.array(state["running_return"], dtype=np.float64)
        self.running_length = np.array(state["running_length"], dtype=np.int64)
        self.returns = [float(v) for v in state["returns"]]
        self.lengths = [int(v) for v in state["lengths"]]
        self.steps = int(state["steps"])
        if "obs" not in state:
            self.obs = None
            return
        for i, e in enumerate(self.envs):
            # reset first: it makes the wrappers (order enforcing) ready to step
            e.reset(seed=self.seed + i)
            u = e.unwrapped
            u.state = np.array(state[f"env{i}/state"], copy=True)
            u.np_random = rng_from_array(state[f"env{i}/rng"])
            _set_elapsed(e, int(state[f"env{i}/elapsed"]))
            if hasattr(u, "steps_beyond_terminated"):
                beyond = int(state[f"env{i}/beyond"])
                u.steps_beyond_terminated = None if beyond < 0 else beyond
        self.obs = np.array(state["obs"], copy=True)


def _elapsed(env: Any) -> int:
    w = env
    while w is not None:
        if hasattr(w, "_elapsed_steps"):
            return int(w._elapsed_steps or 0)
        w = getattr(w, "env", None)
    return 0


def _set_elapsed(env: Any, value: int) -> None:
    w = env
    while w is not None:
        if hasattr(w, "_elapsed_steps"):
            w._elapsed_steps = value
            return
        w = getattr(w, "env", None)
