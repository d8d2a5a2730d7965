"""The policy as the gym sources see it: graph nodes computed from the observation inputs, run
under no_grad (``Graph.no_grad``: tracking off and eval mode on, both restored afterwards), and
evaluation episodes with the greedy or the sampled policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...node import NodeId
from .envs import VectorEnv

if TYPE_CHECKING:
    from ...compile import Compiled

OBSERVATIONS = "train.obs"


def observation_inputs(spec: Any) -> list[str]:
    """The names of a spec's inputs that receive the observations (declared ``from: train.obs``)."""
    return [name for name, inp in spec.inputs.items() if inp.from_ == OBSERVATIONS]


@dataclass
class Policy:
    """``obs_inputs`` receive the observations; ``nodes`` (action first) are computed from them."""

    graph: Any
    obs_inputs: Sequence[NodeId]
    action: NodeId
    extra: Mapping[str, NodeId]  # field name -> node, e.g. {"log_prob": ..., "value": ...}
    _greedy: NodeId | None = field(default=None, init=False, repr=False)

    def _forward(self, obs: np.ndarray, nodes: list[NodeId]) -> list[np.ndarray]:
        """The nodes' values for a batch of observations, under no_grad (tracking off, eval mode,
        both restored afterwards)."""
        g = self.graph
        with g.no_grad():
            for inp in self.obs_inputs:
                g.set_value(inp, obs)
            return g.forward_node(nodes)  # type: ignore[return-value]

    def run(self, obs: np.ndarray, names: Sequence[str] = ()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The actions for a batch of observations, and the named extra nodes' values (flat)."""
        values = self._forward(obs, [self.action, *(self.extra[k] for k in names)])
        actions = np.asarray(values[0]).astype(np.int64).reshape(len(obs))
        return actions, {k: np.array(v, dtype=np.float64).reshape(len(obs)) for k, v in zip(names, values[1:])}

    def value_of(self, name: str, obs: np.ndarray) -> np.ndarray:
        """One extra node (e.g. the critic's value) for a batch of observations."""
        (value,) = self._forward(obs, [self.extra[name]])
        return np.array(value, dtype=np.float64).reshape(len(obs))

    def greedy_node(self) -> NodeId:
        """The most likely action: argmax of the logits where the action is drawn with
        categorical_sample(logits), the action node itself otherwise (e.g. argmax of Q-values)."""
        g = self.graph
        node = g.record(self.action)
        if node.op is not None and node.op.name == "categorical_sample":
            if self._greedy is None:
                self._greedy = g.argmax(NodeId(g, node.inputs[0].index), axis=-1)
            return self._greedy
        return self.action


def make_policy(p: Any, compiled: Compiled) -> Policy:
    """The policy a gym source's entry ``p`` names (its action node, and its log_prob and value
    nodes when given), reading the observations through every input declared ``from: train.obs``."""
    obs_inputs = [compiled.inputs[n] for n in observation_inputs(compiled.spec)]
    extra = {k: compiled.names[getattr(p, k)] for k in ("log_prob", "value") if getattr(p, k, None)}
    return Policy(compiled.graph, obs_inputs, compiled.names[p.action], extra)


def run_episodes(
    policy: Policy,
    env_id: str,
    env_kwargs: Mapping[str, Any],
    episodes: int,
    seed: int,
    greedy: bool = True,
) -> dict[str, float]:
    """``episodes`` whole episodes, one per environment copy (seeded ``seed + i``), all stepped
    together; returns the mean, std, min and max of their returns and their mean length."""
    env = VectorEnv(env_id, episodes, seed, env_kwargs)
    act = Policy(policy.graph, policy.obs_inputs, policy.greedy_node() if greedy else policy.action, {})
    try:
        obs = env.reset()
        done = np.zeros(episodes, dtype=bool)
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, dtype=np.int64)
        while not done.all():
            actions, _ = act.run(obs)
            step = env.step(actions)
            live = ~done
            returns[live] += step.reward[live]
            lengths[live] += 1
            done |= step.terminated | step.truncated
            obs = step.obs
    finally:
        env.close()
    return {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "episode_length": float(lengths.mean()),
    }
