"""One contiguous buffer per kind of optimizer array (the parameters, their gradients, each state
buffer), with every parameter's array a view into it: an update then costs a dozen numpy calls
whatever the number of parameters, not a dozen per parameter (torch's "foreach" optimizers).

For a small model, where an array holds a few hundred numbers, the calls are the cost: Adam
over an MLP's 6 arrays makes ~80 numpy calls per step and ~14 on the flat buffers.
The math is elementwise, so each number goes through exactly the same operations either way:
the flat update is bit for bit the per-parameter one.

Gathering the gradients into the flat buffer is a copy, which for large arrays costs more than
the calls it saves (an SGD step of a 1024-1024-1024-10 MLP: 7% slower flat; of 784-256-128-10:
2%; of 2-16-16-1: 6% faster, and Adam 39% faster). So only parameters of at most MAX_MEAN_SIZE
numbers on average share flat buffers.

The parameters' values become views of the flat buffer on the first flat step. Whoever replaces
a parameter's value afterwards (``set_value``, loading a checkpoint) breaks that link; the next
step notices (an identity check per parameter) and gathers the values into the buffer again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..node import Node

MAX_MEAN_SIZE = 16384


class FlatLayout:
    """Offsets of same-dtype parameters in flat buffers; the buffers for params and gradients."""

    __slots__ = ("dtype", "grads", "params", "slices", "views")

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.dtype = nodes[0].dtype
        offsets = np.cumsum([0] + [int(np.prod(n.shape, dtype=np.int64)) for n in nodes])
        self.slices = [(int(a), int(b), n.shape) for a, b, n in zip(offsets[:-1], offsets[1:], nodes)]
        total = int(offsets[-1])
        self.params = np.zeros(total, dtype=self.dtype)
        self.grads = np.zeros(total, dtype=self.dtype)
        self.views = self.split(self.params)

    @staticmethod
    def fits(nodes: Sequence[Node]) -> bool:
        """Whether nodes should share flat buffers: two or more, all of one float dtype, small."""
        if len(nodes) < 2 or len({n.dtype for n in nodes}) != 1 or nodes[0].dtype.kind != "f":
            return False
        total = sum(int(np.prod(n.shape, dtype=np.int64)) for n in nodes)
        return total <= MAX_MEAN_SIZE * len(nodes)

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        """Each parameter's view into a flat buffer, shaped like the parameter."""
        return [flat[a:b].reshape(shape) for a, b, shape in self.slices]

    def bind(self, nodes: Sequence[Node]) -> np.ndarray:
        """The flat parameter buffer, with every node's value one of its views: values that were
        replaced since the last step are copied in first."""
        for n, v in zip(nodes, self.views):
            if n.value is not v:
                break
        else:
            return self.params
        for n, v in zip(nodes, self.views):
            if n.value is not v:
                np.copyto(v, n.value)
                n.value = v  # the same bytes as the array it replaces: the graph's count holds
        return self.params

    def gather(self, grads: Sequence[np.ndarray]) -> np.ndarray:
        """The gradients, copied into the flat gradient buffer in order."""
        return np.concatenate(grads, axis=None, out=self.grads)  # axis=None: each one flattened
