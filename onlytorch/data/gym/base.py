"""What the gym sources share: the parameters every one takes (the environment, its copies, the
action node), the fields every one yields, the object the trainer fills (environments, the policy
acting in them, training-episode statistics, evaluation episodes, checkpoint state), and the
declaration both sources derive from: the compiler's checks of the nodes they run, the head of
their compile-report lines, what their evaluation episodes report (with the directions the
monitor uses), and which training statistics the progress line and the report single out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field as Param

from ...checkpoint import with_prefix
from ...ops.shapes import fmt
from ..sources import DataError, Field, FieldRow, LiveSource, LoadContext, Params
from .checks import check_nodes, check_train_epochs
from .envs import VectorEnv, env_spaces
from .policy import Policy, observation_inputs, run_episodes

if TYPE_CHECKING:
    from ...compile import Compiled
    from ...monitor import Mode

# What policy.run_episodes returns (a test keeps the two in step), with a direction where one holds
# for every environment.
EPISODE_QUANTITIES: dict[str, Mode | None] = {
    "return_mean": "max",
    "return_std": None,
    "return_min": "max",
    "return_max": "max",
    "episode_length": None,
}


class GymParams(Params):
    env: str = Param(description="a gymnasium environment id with discrete actions, e.g. CartPole-v1")
    env_kwargs: dict[str, Any] = Param(
        {}, description="keyword arguments for gymnasium.make, e.g. {max_episode_steps: 200}"
    )
    envs: int = Param(8, gt=0, le=1024, description="environment copies stepped together")
    action: str = Param(description="the node that gives the action to take (int64, one per observation)")


# The shape of an observation field, as the reference writes it: the environment decides it.
OBS_SHAPE = "the environment's observation shape"
# The fields every gym source yields first (the reference's rows; gym_fields makes them for an environment).
GYM_ROWS = (
    FieldRow("obs", "float", OBS_SHAPE, "the observation the action was taken in"),
    FieldRow("action", "int64", (), "the action taken, in [0, number of actions)"),
    FieldRow("reward", "float", (), "the reward that followed"),
)


def gym_fields(p: GymParams, fields: dict[str, Field]) -> dict[str, Field]:
    spaces = env_spaces(p.env, p.env_kwargs)
    obs, _, reward = GYM_ROWS
    return {
        "obs": Field(spaces.obs_shape, "float", obs.doc),
        "action": Field((), "int64", f"the action taken, in [0, {spaces.n_actions})", classes=spaces.n_actions),
        "reward": reward.field(p),
        **fields,
    }


def not_loaded(p: GymParams, ctx: LoadContext) -> dict[str, np.ndarray]:
    raise DataError("gym sources are collected by the trainer while it trains; they have no data to load")


class GymLiveSource(LiveSource):
    """The declaration of a gym source: the compiler checks the nodes it runs (see gym.checks); a
    subclass adds its own report lines (describe) and builds its object (make_live). Its
    evaluation runs whole episodes (EPISODE_QUANTITIES), best.npz is by default the one of the
    best mean return, and the progress line shows the training episodes' recent mean return."""

    quantities: ClassVar[dict[str, Mode | None]] = EPISODE_QUANTITIES
    default_monitor: ClassVar[str | None] = "return_mean"
    progress_stat: ClassVar[str | None] = "return_mean"
    counter_stats: ClassVar[tuple[str, ...]] = ("env_steps", "episodes")  # see episode_stats

    def check_compiled(self, p: Any, ctx: Any) -> None:
        check_nodes(self, p, ctx)
        check_train_epochs(self, ctx)

    def head(self, p: Any, compiled: Compiled) -> str:
        """The first line of its report: the environment, and the inputs that read its observations."""
        spaces = env_spaces(p.env, p.env_kwargs)
        obs = ", ".join(observation_inputs(compiled.spec))
        return f"{self.name} {p.env}: observations {fmt(spaces.obs_shape)} -> {obs}, {spaces.n_actions} actions"


class GymData:
    """What both gym sources' trainer-side objects share: the environment copies, the policy that
    acts in them, the training-episode statistics, evaluation episodes, and the environments' part
    of a checkpoint."""

    def __init__(self, p: GymParams, policy: Policy, batch_size: int, seed: int, dtype: Any) -> None:
        self.p = p
        self.policy = policy
        self.env = VectorEnv(p.env, p.envs, seed, p.env_kwargs)
        self.batch_size = batch_size
        self.dtype = np.dtype(dtype)

    def stats(self) -> dict[str, float]:
        """Training-episode statistics for the metrics log."""
        return episode_stats(self.env)

    def episodes(self, n: int, seed: int, greedy: bool) -> dict[str, float]:
        return run_episodes(self.policy, self.p.env, self.p.env_kwargs, n, seed, greedy)

    def state(self) -> dict[str, np.ndarray]:
        return {f"env/{k}": v for k, v in self.env.state().items()}

    def check_state(self, state: dict[str, np.ndarray], where: str = "") -> None:
        """Raise CheckpointError (naming the entry) unless state is one this source's state()
        could have written; changes nothing."""
        self.env.check_state(with_prefix(state, "env"), f"{where}env/")

    def restore(self, state: dict[str, np.ndarray], where: str = "") -> None:
        self.env.restore(with_prefix(state, "env"), f"{where}env/")


def episode_stats(env: VectorEnv, last: int = 20) -> dict[str, float]:
    out = {"env_steps": float(env.steps), "episodes": float(len(env.returns))}
    if env.returns:
        recent = env.returns[-last:]
        out["return_mean"] = float(np.mean(recent))
        out["episode_length"] = float(np.mean(env.lengths[-last:]))
    return out
