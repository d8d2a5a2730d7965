"""The gym sources: on-policy rollouts (``gym.rollout``, rollout.py) and an experience-replay buffer
(``gym.replay``, replay.py), each declared in its module as a ``LiveSource`` that the trainer fills
while it trains. What they share is in base.py (parameters, fields, the trainer-side object) and
checks.py (the compiler's checks of the nodes they run); envs.py holds the environments, policy.py
the policy acting in them, advantages.py GAE.

gymnasium is the ``gym`` extra: it is imported only when an environment is made or its spaces are
read (envs.gymnasium), and its absence is a DataError naming the extra."""

# Registration order is the order of the sources in the spec schema and the docs: rollout first.
# isort: off
from . import rollout  # noqa: F401  (registration)
from . import replay  # noqa: F401  (registration)
# isort: on
