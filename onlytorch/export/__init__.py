"""ONNX export (``onlytorch export``; docs/export.md). Importing this package costs nothing: the
exporter, and onnx with it, load on first use of ``export_onnx``. Op mappings are declared beside
each op (``onnx=``) with the plain-Python API of ``onlytorch.export.builder``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .exporter import ExportError, ExportResult, export_onnx

__all__ = ["ExportError", "ExportResult", "export_onnx"]


def __getattr__(name: str) -> Any:
    # Every op module imports this package (for builder.py) while the exporter imports the
    # compiler, and so the ops: the exporter is loaded when its names are first read, never while
    # the ops are being imported (no import-time loop; see tests/test_architecture.py).
    if name in __all__:
        return getattr(importlib.import_module(f"{__name__}.exporter"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
