"""The errors the engine raises. Every user mistake is a GraphError (or a subclass)."""

from __future__ import annotations


class GraphError(Exception):
    """A misuse of the graph: the message names the node(s) involved and the fix."""


class ShapeError(GraphError):
    """Static or runtime shapes that do not fit together."""


class ReleasedValueError(GraphError):
    """A backward needed a value that an earlier retain_graph=False backward released."""


class StaleValueError(GraphError):
    """A backward on a value that no longer matches its inputs (they changed after forward)."""


class NonFiniteError(GraphError):
    """A NaN or infinity appeared in a value or gradient (anomaly detection)."""

    def __init__(self, message: str, node_name: str) -> None:
        super().__init__(message)
        self.node_name = node_name
