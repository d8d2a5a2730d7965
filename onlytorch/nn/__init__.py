"""Layers as modules (``modules``: Linear, MLP, BatchNorm, ... owning parameters in a Graph), the
layer registry (``layers``: one declaration per layer with parameters) and the recurrent-cell
registry (``cells``: one declaration per cell kind), both read by the spec schema, the compiler and
the docs."""

from .attention import MultiheadAttention, PositionalEmbedding
from .cells import CELLS, CellDef, cell, unregister_cell
from .conv import Conv, GroupNorm
from .layers import (
    LAYERS,
    LayerDef,
    LayerOptionError,
    LayerOptions,
    is_op_layer,
    layer,
    op_keeps_shape,
    op_keeps_width,
    op_out_shape,
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
    LSTMCell,
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
    "Conv",
    "Dropout",
    "Embedding",
    "GRUCell",
    "GroupNorm",
    "LSTMCell",
    "LayerDef",
    "LayerNorm",
    "LayerOptionError",
    "LayerOptions",
    "Linear",
    "Module",
    "MultiheadAttention",
    "PositionalEmbedding",
    "RNNCell",
    "Sequential",
    "activation",
    "cell",
    "copy_parameters",
    "is_op_layer",
    "layer",
    "op_keeps_shape",
    "op_keeps_width",
    "op_out_shape",
    "unregister",
    "unregister_cell",
]
