"""onlytorch: a numpy deep-learning engine built around control of gradient flow."""

from . import nn, optim
from ._version import __version__ as __version__
from .app import BadInput, EvalResult, FitError, FitResult, InvalidSpec, SpecChanged, evaluate_checkpoint, fit
from .errors import GraphError, NonFiniteError, ReleasedValueError, ShapeError, StaleValueError
from .gradcheck import gradcheck, gradgradcheck, numeric_grad
from .graph import Graph
from .node import NodeId
from .runclaim import Refused, RunDirUnusable
from .threads import get_num_threads, num_threads, set_num_threads

__all__ = [
    "BadInput",
    "EvalResult",
    "FitError",
    "FitResult",
    "Graph",
    "GraphError",
    "InvalidSpec",
    "NodeId",
    "NonFiniteError",
    "Refused",
    "ReleasedValueError",
    "RunDirUnusable",
    "ShapeError",
    "SpecChanged",
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
