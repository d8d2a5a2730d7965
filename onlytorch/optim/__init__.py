"""Optimizers, gradient clipping and learning-rate schedules (torch.optim's rules and defaults).

``OPTIMIZERS`` and ``SCHEDULES`` map the snake_case names that specs use to the classes."""

from .clip import clip_grad_norm, clip_grad_value
from .optimizers import SGD, Adam, AdamW, Optimizer, RMSprop
from .schedules import CosineAnnealingLR, ExponentialLR, LinearLR, Schedule, StepLR, WarmupCosine

OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}

SCHEDULES: dict[str, type[Schedule]] = {
    "step_lr": StepLR,
    "exponential_lr": ExponentialLR,
    "cosine_annealing_lr": CosineAnnealingLR,
    "linear_lr": LinearLR,
    "warmup_cosine": WarmupCosine,
}

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "SGD",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "ExponentialLR",
    "LinearLR",
    "Optimizer",
    "RMSprop",
    "Schedule",
    "StepLR",
    "WarmupCosine",
    "clip_grad_norm",
    "clip_grad_value",
]
