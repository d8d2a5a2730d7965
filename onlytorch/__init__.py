"""onlytorch: a numpy deep-learning engine built around control of gradient flow."""

from . import nn, optim
from .errors import GraphError, NonFiniteError, ReleasedValueError, ShapeError, StaleValueError
from .gradcheck import gradcheck, gradgradcheck, numeric_grad
from .graph import Graph
from .node import NodeId

__version__ = "0.1.0"

__all__ = [
    "Graph",
    "GraphError",
    "NodeId",
    "NonFiniteError",
    "ReleasedValueError",
    "ShapeError",
    "StaleValueError",
    "gradcheck",
    "gradgradcheck",
    "nn",
    "numeric_grad",
    "optim",
]
