"""The seed's actor-critic loop with the Python API, no spec: experience collected under
no_grad_scope, the critic's value detached (detach_node) while the actor's loss is
differentiated, two backward calls through one shared body (the first with retain_graph=True),
one optimizer step. CartPole-v1, 8 environments x 16 steps per iteration; needs the gym extra.

Run: python examples/actor_critic.py [ITERATIONS [SEED]]   (defaults 1200 and 0; SEED seeds the
network, the action sampling and the environments: environment i starts from seed 8 * SEED + i).
With the defaults the last 20 training episodes average 500, the maximum, at the end: seeds 0, 1
and 2 first reach 500 at iterations 708, 563 and 801 and stay there to the end (seeds 3 to 9
too, from iteration 925 at the latest). Under 20 s of CPU time on a slow, busy 2-core machine.

The learning rate (5e-3) decays linearly to 0 over the run and the entropy bonus is small
(0.001): once every episode lasts 500 steps, the normalized advantages are mostly noise, and a
policy still taking large or deliberately random steps then wanders off the maximum again."""

import sys

import numpy as np

import onlytorch as ot
from onlytorch import nn
from onlytorch.data.gym.advantages import gae
from onlytorch.data.gym.envs import VectorEnv

iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 1200
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
E, T = 8, 16

g = ot.Graph(seed=seed)
obs = g.input("obs", shape=(None, 4))
act = g.input("act", shape=(None,), dtype="int64")
ret = g.input("ret", shape=(None,))
body = nn.MLP(g, [4, 64, 64], activation_fn="tanh", out_activation="tanh", name="body")
pi = nn.Linear(g, 64, 2, name="pi")
v = nn.Linear(g, 64, 1, name="v")
h = body(obs)
logits = pi(h)
action = g.categorical_sample(logits)
value = g.reshape(v(h), (-1,))
# The actor's loss reads the critic's value through the advantage; value is detached while
# the actor's loss is differentiated, so that loss cannot move the critic.
centred = ret - value - g.mean(ret - value)
advantage = centred / g.sqrt(g.mean(centred * centred) + 1e-8)
actor_loss = -g.mean(g.categorical_log_prob(logits, act) * advantage) - 0.001 * g.mean(g.categorical_entropy(logits))
critic_loss = 0.5 * g.mean((ret - value) ** 2)
scaled_critic_loss = 0.02 * critic_loss  # the critic's squared errors would swamp the actor's gradient
actor_params = body.parameters() + pi.parameters()
critic_params = body.parameters() + v.parameters()
opt = ot.optim.Adam(g, body.parameters() + pi.parameters() + v.parameters(), lr=5e-3)
decay = ot.optim.LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=iterations)


def act_on(o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    def forward(graph: ot.Graph) -> tuple[np.ndarray, np.ndarray]:
        graph.set_value(obs, o)
        a, val = graph.forward_node([action, value])
        return np.asarray(a), np.asarray(val, dtype=np.float64)

    return g.no_grad_scope(forward)  # no gradient tracking, eval mode, both restored


env = VectorEnv("CartPole-v1", E, seed=seed * E)  # environment i is reset with seed * E + i
first_500 = None
for it in range(iterations):
    observations = np.empty((T, E, 4), dtype=np.float32)
    actions = np.empty((T, E), dtype=np.int64)
    values, next_values = np.empty((T, E)), np.empty((T, E))
    rewards, term, trunc = np.empty((T, E)), np.empty((T, E), dtype=bool), np.empty((T, E), dtype=bool)
    o = env.current()
    for t in range(T):
        observations[t] = o
        actions[t], values[t] = act_on(o)
        step = env.step(actions[t])
        rewards[t], term[t], trunc[t] = step.reward, step.terminated, step.truncated
        # the value of the observation each step reached (a truncated episode bootstraps from it)
        next_values[t] = act_on(step.final_obs)[1]
        o = step.obs
    _, returns = gae(rewards, values, next_values, term, trunc, gamma=0.99, lam=0.95)
    g.set_value(obs, observations.reshape(T * E, 4))
    g.set_value(act, actions.reshape(-1))
    g.set_value(ret, returns.reshape(-1).astype(np.float32))
    g.clear_jacobi()
    g.forward_node([actor_loss, scaled_critic_loss])
    g.detach_node(value)
    g.backward_nodes_ex(actor_params, actor_loss, retain_graph=True)  # the body's values are needed again
    g.attach_node(value)
    g.backward_nodes_ex(critic_params, scaled_critic_loss)
    ot.optim.clip_grad_norm(g, opt.params, 0.5)
    opt.step()
    decay.step()
    recent = env.returns[-20:]
    if first_500 is None and len(recent) == 20 and np.mean(recent) == 500.0:
        first_500 = it + 1
    if (it + 1) % 100 == 0 or it + 1 == iterations:
        print(f"iteration {it + 1:5d}  episodes {len(env.returns):5d}  mean return (last 20) {np.mean(recent):6.1f}")
print(f"the last 20 episodes first averaged 500 at iteration {first_500}")
