"""onlytorch: a numpy deep-learning engine built around control of gradient flow."""

from . import nn, optim
from .app import EvalResult, FitError, FitResult, evaluate_checkpoint, fit
from .errors import GraphError, NonFiniteError, ReleasedValueError, ShapeError, StaleValueError
from .gradcheck import gradcheck, gradgradcheck, numeric_grad
from .graph import Graph
from .node import NodeId
from .threads import get_num_threads, num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "EvalResult",
    "FitError",
    "FitResult",
    "Graph",
    "GraphError",
    "NodeId",
    "NonFiniteError",
    "ReleasedValueError",
    "ShapeError",
    "StaleValueError",
    "evaluate_checkpoint",
    "fit",
    "get_num_threads",
    "gradcheck",
    "gradgradcheck",
    "nn",
    "num_threads",
    "numeric_grad",
    "optim",
    "set_num_threads",
]
