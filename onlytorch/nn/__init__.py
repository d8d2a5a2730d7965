"""Layers as modules (``modules``: Linear, MLP, BatchNorm, ... owning parameters in a Graph) and
the layer registry (``layers``: one declaration per layer with parameters, read by the spec
schema, the compiler and the docs)."""

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
    "LAYERS",
    "MLP",
    "BatchNorm",
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
    "copy_parameters",
    "is_op_layer",
    "layer",
    "op_keeps_width",
    "unregister",
]
