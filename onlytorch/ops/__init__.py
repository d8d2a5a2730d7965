"""The op registry and every op registered in it (importing this package registers them)."""

from . import attention, conv, distributions, elementwise, layers, linalg, losses, pool, reduce, shape_ops  # noqa: F401
from .registry import REGISTRY, OpDef, get_op, public_ops

__all__ = ["REGISTRY", "OpDef", "get_op", "public_ops"]
