"""Layers as modules (``modules``: Linear, MLP, BatchNorm, ... owning parameters in a Graph), the
layer registry (``layers``: one declaration per layer with parameters) and the recurrent-cell
registry (``cells``: one declaration per cell kind), both read by the spec schema, the compiler and
the docs."""

from .cells import CELLS, CellDef, cell, unregister_cell
from .layers import (
    LAYERS,
    LayerDef,
    LayerOptionError,
    LayerOptions,
    is_op_layer,
    layer,
    op_keeps_width,
    unregister,
)
from .modules import (
    MLP,
    BatchNorm,
    Dropout,
    Embedding,
    GRUCell,
    LayerNorm,
    Linear,
    Module,
    RNNCell,
    Sequential,
    activation,
    copy_parameters,
)

__all__ = [
    "CELLS",
    "LAYERS",
    "MLP",
    "BatchNorm",
    "CellDef",
    "Dropout",
    "Embedding",
    "GRUCell",
    "LayerDef",
    "LayerNorm",
    "LayerOptionError",
    "LayerOptions",
    "Linear",
    "Module",
    "RNNCell",
    "Sequential",
    "activation",
    "cell",
    "copy_parameters",
    "is_op_layer",
    "layer",
    "op_keeps_width",
    "unregister",
    "unregister_cell",
]
