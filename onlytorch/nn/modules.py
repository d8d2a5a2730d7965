"""The module classes: objects that own parameters (and states) in a Graph and add nodes when
called. Calling a module twice shares its weights. Weights are laid out (in, out) and initialised
as torch's defaults from the graph's seeded RNG."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import GraphError, ShapeError
from ..graph import Graph
from ..node import NodeId
from ..ops.registry import REGISTRY
from ..ops.shapes import fmt


class Module:
    """Base class: a named owner of parameters and states."""

    def __init__(self, g: Graph, name: str | None, kind: str) -> None:
        self.g = g
        self.name = _unique_prefix(g, name or kind)
        self._params: list[NodeId] = []
        self._states: list[NodeId] = []
        self._children: list[Module] = []

    def _param(self, local: str, shape: tuple[int, ...], init: str, **init_args: Any) -> NodeId:
        p = self.g.parameter(f"{self.name}.{local}", shape=shape, init=init, **init_args)
        self._params.append(p)
        return p

    def _state(self, local: str, shape: tuple[int, ...], init: str) -> NodeId:
        s = self.g.state(f"{self.name}.{local}", shape=shape, init=init)
        self._states.append(s)
        return s

    def _child(self, m: Module) -> Module:
        self._children.append(m)
        return m

    def parameters(self) -> list[NodeId]:
        """This module's trainable parameters, its children's included; each once, also when a
        child is used twice (as torch)."""
        return _unique(self._params + [p for c in self._children for p in c.parameters()])

    def states(self) -> list[NodeId]:
        return _unique(self._states + [s for c in self._children for s in c.states()])

    def num_parameters(self) -> int:
        return int(sum(np.prod(p.shape) for p in self.parameters()))

    def __call__(self, *xs: NodeId) -> NodeId:
        raise NotImplementedError


def _unique(nodes: list[NodeId]) -> list[NodeId]:
    return list(dict.fromkeys(nodes))


def _unique_prefix(g: Graph, base: str) -> str:
    # A module path "mlp/0" (of parameter "mlp/0.weight") takes "mlp" as well as "mlp/0".
    taken: set[str] = set()
    for n in g.records():
        if n.user_named:
            parts = n.name.split(".", 1)[0].split("/")
            taken.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    if base not in taken:
        return base
    i = 1
    while f"{base}{i}" in taken:
        i += 1
    return f"{base}{i}"


class Linear(Module):
    """y = x @ weight + bias, weight (in, out); torch's default init U(±1/sqrt(in))."""

    def __init__(
        self,
        g: Graph,
        in_features: int,
        out_features: int,
        bias: bool = True,
        name: str | None = None,
        init: str = "lecun_uniform",
        **init_args: Any,
    ) -> None:
        super().__init__(g, name, "linear")
        self.in_features, self.out_features = in_features, out_features
        self.weight = self._param("weight", (in_features, out_features), init, **init_args)
        self.bias = self._param("bias", (out_features,), "lecun_uniform", fan_in=in_features) if bias else None

    def __call__(self, x: NodeId) -> NodeId:  # type: ignore[override]
        if self.bias is None:
            return self.g.matmul(x, self.weight)
        return self.g.linear(x, self.weight, self.bias)


def activation(g: Graph, name: str, **attrs: Any) -> Callable[[NodeId], NodeId]:
    """The unary op called name (relu, tanh, leaky_relu, ...) as a layer."""
    op = REGISTRY.get(name)
    if op is None or not op.public or len(op.input_names) != 1 or op.variadic:
        unary = sorted(
            k for k, v in REGISTRY.items() if v.public and len(v.input_names) == 1 and not v.variadic and v.vjp_rule
        )
        raise GraphError(f"unknown activation {name!r}; use one of {', '.join(unary)}")
    method = getattr(g, op.name)
    return lambda x: method(x, **attrs)


class Dropout(Module):
    def __init__(self, g: Graph, p: float = 0.5, name: str | None = None) -> None:
        super().__init__(g, name, "dropout")
        if not 0.0 <= p <= 1.0:
            raise GraphError(f"dropout probability must lie in [0, 1], got {p}")
        self.p = p

    def __call__(self, x: NodeId) -> NodeId:  # type: ignore[override]
        return self.g.dropout(x, p=self.p)


class BatchNorm(Module):
    """Batch norm over (batch, features), (batch, channels, length) or (batch, channels, height,
    width), num_features being axis 1: batch statistics and running-statistics updates in train
    mode, running statistics in eval mode (torch.nn.BatchNorm1d / BatchNorm2d)."""

    def __init__(
        self, g: Graph, num_features: int, momentum: float = 0.1, eps: float = 1e-5, name: str | None = None
    ) -> None:
        super().__init__(g, name, "batch_norm")
        self.momentum, self.eps = momentum, eps
        self.weight = self._param("weight", (num_features,), "ones")
        self.bias = self._param("bias", (num_features,), "zeros")
        self.running_mean = self._state("running_mean", (num_features,), "zeros")
        self.running_var = self._state("running_var", (num_features,), "ones")

    def __call__(self, x: NodeId) -> NodeId:  # type: ignore[override]
        return self.g.batch_norm(
            x, self.weight, self.bias, self.running_mean, self.running_var, momentum=self.momentum, eps=self.eps
        )


class LayerNorm(Module):
    """Normalise over the trailing dimensions given by normalized_shape (torch.nn.LayerNorm)."""

    def __init__(
        self, g: Graph, normalized_shape: int | Sequence[int], eps: float = 1e-5, name: str | None = None
    ) -> None:
        super().__init__(g, name, "layer_norm")
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        self.axes = tuple(range(-len(shape), 0))
        self.weight = self._param("weight", shape, "ones")
        self.bias = self._param("bias", shape, "zeros")

    def __call__(self, x: NodeId) -> NodeId:  # type: ignore[override]
        return self.g.layer_norm(x, self.weight, self.bias, axis=self.axes, eps=self.eps)


class Embedding(Module):
    """A lookup table of num_embeddings rows of size dim, initialised N(0, 1) (as torch)."""

    def __init__(self, g: Graph, num_embeddings: int, dim: int, name: str | None = None) -> None:
        super().__init__(g, name, "embedding")
        self.weight = self._param("weight", (num_embeddings, dim), "normal")

    def __call__(self, idx: NodeId) -> NodeId:  # type: ignore[override]
        return self.g.embedding(idx, self.weight)


class Sequential(Module):
    """Layers applied in order. Items are modules or callables node -> node."""

    def __init__(
        self, g: Graph, layers: Sequence[Module | Callable[[NodeId], NodeId]], name: str | None = None
    ) -> None:
        super().__init__(g, name, "sequential")
        self.layers = list(layers)
        for layer in self.layers:
            if isinstance(layer, Module):
                self._child(layer)

    def __call__(self, x: NodeId) -> NodeId:  # type: ignore[override]
        for layer in self.layers:
            x = layer(x)
        return x


class MLP(Sequential):
    """Linear layers of the given sizes with an activation between them (none after the last,
    unless out_activation), optional batch norm or layer norm and dropout after each hidden
    activation."""

    def __init__(
        self,
        g: Graph,
        sizes: Sequence[int],
        activation_fn: str = "relu",
        out_activation: str | None = None,
        dropout: float = 0.0,
        norm: str | None = None,
        name: str | None = None,
    ) -> None:
        if len(sizes) < 2:
            raise GraphError(f"an MLP needs at least an input and an output size, got {list(sizes)}")
        if norm not in (None, "batch", "layer"):
            raise GraphError(f"MLP norm must be None, 'batch' or 'layer', got {norm!r}")
        super().__init__(g, [], name=name or "mlp")
        prefix = self.name
        layers: list[Module | Callable[[NodeId], NodeId]] = []
        last = len(sizes) - 2
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(Linear(g, a, b, name=f"{prefix}/{i}"))
            if i < last:
                if norm == "batch":
                    layers.append(BatchNorm(g, b, name=f"{prefix}/bn{i}"))
                elif norm == "layer":
                    layers.append(LayerNorm(g, b, name=f"{prefix}/ln{i}"))
                layers.append(activation(g, activation_fn))
                if dropout:
                    layers.append(Dropout(g, dropout))
            elif out_activation:
                layers.append(activation(g, out_activation))
        self.layers = layers
        for layer in layers:
            if isinstance(layer, Module):
                self._child(layer)


class RNNCell(Module):
    """h' = tanh(x @ W_ih + b_ih + h @ W_hh + b_hh) (torch.nn.RNNCell, init U(±1/sqrt(hidden)))."""

    def __init__(
        self, g: Graph, input_size: int, hidden_size: int, nonlinearity: str = "tanh", name: str | None = None
    ) -> None:
        super().__init__(g, name, "rnn")
        if nonlinearity not in ("tanh", "relu"):
            raise GraphError(f"RNNCell nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.hidden_size = hidden_size
        self.nonlinearity = nonlinearity
        fan = dict(init="lecun_uniform", fan_in=hidden_size)
        self.w_ih = self._param("w_ih", (input_size, hidden_size), **fan)  # type: ignore[arg-type]
        self.w_hh = self._param("w_hh", (hidden_size, hidden_size), **fan)  # type: ignore[arg-type]
        self.b_ih = self._param("b_ih", (hidden_size,), **fan)  # type: ignore[arg-type]
        self.b_hh = self._param("b_hh", (hidden_size,), **fan)  # type: ignore[arg-type]

    def __call__(self, x: NodeId, h: NodeId) -> NodeId:  # type: ignore[override]
        g = self.g
        pre = g.linear(x, self.w_ih, self.b_ih) + g.linear(h, self.w_hh, self.b_hh)
        return g.tanh(pre) if self.nonlinearity == "tanh" else g.relu(pre)


class GRUCell(Module):
    """torch.nn.GRUCell: gates r, z, n packed in that order along the output axis of W_ih, W_hh."""

    def __init__(self, g: Graph, input_size: int, hidden_size: int, name: str | None = None) -> None:
        super().__init__(g, name, "gru")
        self.hidden_size = hidden_size
        fan = dict(init="lecun_uniform", fan_in=hidden_size)
        self.w_ih = self._param("w_ih", (input_size, 3 * hidden_size), **fan)  # type: ignore[arg-type]
        self.w_hh = self._param("w_hh", (hidden_size, 3 * hidden_size), **fan)  # type: ignore[arg-type]
        self.b_ih = self._param("b_ih", (3 * hidden_size,), **fan)  # type: ignore[arg-type]
        self.b_hh = self._param("b_hh", (3 * hidden_size,), **fan)  # type: ignore[arg-type]

    def __call__(self, x: NodeId, h: NodeId) -> NodeId:  # type: ignore[override]
        g, hs = self.g, self.hidden_size
        gi = g.linear(x, self.w_ih, self.b_ih)
        gh = g.linear(h, self.w_hh, self.b_hh)

        def gate(v: NodeId, k: int) -> NodeId:
            return v[..., k * hs : (k + 1) * hs]

        r = g.sigmoid(gate(gi, 0) + gate(gh, 0))
        z = g.sigmoid(gate(gi, 1) + gate(gh, 1))
        n = g.tanh(gate(gi, 2) + r * gate(gh, 2))
        return (1.0 - z) * n + z * h


class LSTMCell(Module):
    """torch.nn.LSTMCell: (x, h, c) -> (h', c'), gates i, f, g, o packed in that order along the
    output axis of w_ih (in, 4H) and w_hh (H, 4H), the transposes of torch's weight_ih and
    weight_hh; b_ih, b_hh are torch's bias_ih, bias_hh. Init U(±1/sqrt(hidden)), as torch."""

    def __init__(self, g: Graph, input_size: int, hidden_size: int, name: str | None = None) -> None:
        super().__init__(g, name, "lstm")
        self.hidden_size = hidden_size
        fan = dict(init="lecun_uniform", fan_in=hidden_size)
        self.w_ih = self._param("w_ih", (input_size, 4 * hidden_size), **fan)  # type: ignore[arg-type]
        self.w_hh = self._param("w_hh", (hidden_size, 4 * hidden_size), **fan)  # type: ignore[arg-type]
        self.b_ih = self._param("b_ih", (4 * hidden_size,), **fan)  # type: ignore[arg-type]
        self.b_hh = self._param("b_hh", (4 * hidden_size,), **fan)  # type: ignore[arg-type]

    def __call__(self, x: NodeId, h: NodeId, c: NodeId) -> tuple[NodeId, NodeId]:  # type: ignore[override]
        g, hs = self.g, self.hidden_size
        for state, v in (("h", h), ("c", c)):
            # said here, in the cell's terms: the broadcast error it would raise names no state
            if not v.shape or v.shape[-1] != hs:
                raise ShapeError(
                    f"its state {state} has shape {fmt(v.shape)}, but the cell's hidden size is {hs}: "
                    f"give the initial {state} the shape [{hs}]"
                )
        z = g.linear(x, self.w_ih, self.b_ih) + g.linear(h, self.w_hh, self.b_hh)

        def gate(k: int) -> NodeId:
            return z[..., k * hs : (k + 1) * hs]

        c_next = g.sigmoid(gate(1)) * c + g.sigmoid(gate(0)) * g.tanh(gate(2))
        return g.sigmoid(gate(3)) * g.tanh(c_next), c_next


def copy_parameters(g: Graph, src: Sequence[NodeId], dst: Sequence[NodeId], tau: float = 1.0) -> None:
    """dst <- tau * src + (1 - tau) * dst for each pair (tau=1: an exact copy, a hard target
    network sync; 0 < tau < 1: Polyak averaging)."""
    if len(src) != len(dst):
        raise GraphError(f"copy_parameters: {len(src)} source and {len(dst)} destination parameters")
    if not 0.0 < tau <= 1.0:
        raise GraphError(f"copy_parameters: tau must lie in (0, 1], got {tau}")
    pairs = [(g.record(s), g.record(d)) for s, d in zip(src, dst)]
    for sn, dn in pairs:  # check every pair before changing any
        if sn.shape != dn.shape:
            raise GraphError(f"copy_parameters: {sn.name!r} {sn.shape} and {dn.name!r} {dn.shape} differ in shape")
        if dn.kind not in ("parameter", "state"):
            raise GraphError(f"copy_parameters: the destination {dn.describe()} is not a parameter or state")
        if sn.value is None:
            raise GraphError(f"copy_parameters: the source {sn.describe()} holds no value")
    for sn, dn in pairs:
        if tau == 1.0:
            np.copyto(dn.value, sn.value)
        else:
            dn.value *= 1.0 - tau
            dn.value += tau * sn.value
        g.runtime.mark_changed(dn)
