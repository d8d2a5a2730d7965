"""Initialisation from checkpoints (the spec's ``init:``, ``onlytorch train --init``): what a
checkpoint holds, read from its array headers only (``checkpoint_tensors``, for validation), and
loading the modules a compiled spec takes from checkpoints at the start of a fresh run
(``load_init``).

A checkpoint keys a module's tensors as ``param/MODULE.REST`` and ``state/MODULE.REST`` (see
``Trainer.state``): MODULE is the module's name in the run that wrote it, REST the same in any
spec that builds the module alike (``0.weight``, ``w_ih``). Mapping module A of a checkpoint to
module B of the spec loads ``param/A.REST`` into ``B.REST`` for every tensor of B."""

from __future__ import annotations

import hashlib
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import checkpoint as ckpt
from . import safe_files
from .node import NodeId

if TYPE_CHECKING:
    from .compiler.result import Compiled

KINDS = ("param", "state")  # the checkpoint entries that hold a module's tensors


@dataclass(frozen=True)
class Tensor:
    """One tensor of a module in a checkpoint, as its .npy header describes it."""

    key: str  # the checkpoint entry: param/enc.0.weight
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass
class InitEntry:
    """One checkpoint to load modules from, as validated: ``given`` is the path as written (in the
    spec, or typed after ``--init``), ``path`` where it resolved; ``modules`` maps the checkpoint's
    module names to the spec's, ``targets`` each checkpoint entry to the tensor it sets."""

    given: str
    path: pathlib.Path  # absolute, as the OS opens it (``..`` and links left to it)
    origin: str  # "spec" (init: entry ``index``) or "--init"
    index: int | None = None
    modules: dict[str, str] = field(default_factory=dict)
    targets: list[tuple[str, NodeId]] = field(default_factory=list)

    @property
    def resolved(self) -> pathlib.Path:
        """The file itself (``..`` and symbolic links resolved), for the report and run.json."""
        try:
            return self.path.resolve()
        except (OSError, RuntimeError):  # a link loop: the path as it is
            return self.path

    def record(self, sha256: str) -> dict[str, Any]:
        """What run.json says of this entry."""
        return {"checkpoint": str(self.resolved), "sha256": sha256, "modules": dict(self.modules), "from": self.origin}


class NotACheckpoint(safe_files.RefusedFile):
    """An archive whose arrays are no module's tensors (not written by onlytorch train)."""


def checkpoint_tensors(path: pathlib.Path) -> dict[str, dict[str, Tensor]]:
    """The modules of the checkpoint at path: module name -> REST -> its tensor, read from the zip
    directory and the .npy headers only (no array is unpacked). Raises FileNotFoundError,
    RefusedFile (not a regular file, too big, not an .npz archive, a damaged header, or no
    module tensor at all: NotACheckpoint), CheckpointError (a bad size bound in the environment)
    or another OSError."""
    headers = safe_files.read_npz_headers(path, ckpt.max_bytes(), "checkpoint")
    modules: dict[str, dict[str, Tensor]] = {}
    for name, h in headers.items():
        kind, sep, tensor = name.partition("/")
        if not sep or kind not in KINDS or not tensor:
            continue
        module, _, rest = tensor.partition(".")
        modules.setdefault(module, {})[rest] = Tensor(name, h.shape, h.dtype)
    if not modules:
        reason = "it holds no parameters (no 'param/...' arrays): it is not a checkpoint written by onlytorch train"
        raise NotACheckpoint(f"checkpoint {path}: {reason}", path, reason)
    return modules


def module_tensors(compiled_modules: Mapping[str, Any], name: str) -> list[tuple[str, NodeId]]:
    """(checkpoint kind, node) of every tensor of a module of the spec: its parameters, then its states."""
    m = compiled_modules[name]
    return [("param", p) for p in m.params] + [("state", s) for s in m.states]


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with safe_files.open_regular(path, ckpt.max_bytes(), "checkpoint") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_init(compiled: Compiled) -> list[dict[str, Any]]:
    """Set the modules the spec initialises from checkpoints to the checkpoints' values (bit for
    bit, cast to the graph's dtype), then start the target copies of loaded modules (``copy_of``)
    from their sources' new values, unless a copy was loaded itself. Every file is read and
    checked whole before any value is set (CheckpointError naming the file and the entry: the
    graph is then unchanged). Returns run.json's records, one per entry."""
    g = compiled.graph
    values: list[tuple[NodeId, np.ndarray]] = []
    records: list[dict[str, Any]] = []
    for entry in compiled.init:
        try:
            digest = sha256_of(entry.path)
        except FileNotFoundError:
            raise ckpt.CheckpointError(f"no checkpoint at {entry.path} (init: {entry.given})") from None
        except OSError as e:
            raise ckpt.CheckpointError(f"cannot read checkpoint {entry.path}: {e}") from None
        state = ckpt.load(entry.path)
        for key, node in entry.targets:
            saved = ckpt.floats(state, key, what=f"{node.name!r}")
            if saved.shape != tuple(node.shape):
                raise ckpt.CheckpointError(
                    f"checkpoint {entry.path}: entry {key!r} has shape {saved.shape}, but {node.name!r} has shape "
                    f"{tuple(node.shape)} (the file changed since the spec was validated)"
                )
            values.append((node, np.array(saved, dtype=g.dtype, copy=True)))
        records.append(entry.record(digest))
    for node, value in values:
        g.set_value(node, value)
    loaded = {m for entry in compiled.init for m in entry.modules.values()}
    for copy, (source, _) in compiled.targets.items():
        if source in loaded and copy not in loaded:
            for (_, src), (_, dst) in zip(
                module_tensors(compiled.modules, source), module_tensors(compiled.modules, copy)
            ):
                g.set_value(dst, np.array(g.require_value(src), copy=True))
    return records


def describe_entry(entry: InitEntry) -> str:
    """'mlp <- teacher (runs/t/checkpoints/best.npz)' for the compile report."""
    pairs = ", ".join(here if here == there else f"{here} <- {there}" for there, here in entry.modules.items())
    where = entry.given if entry.origin == "spec" else f"--init {entry.given}"
    return f"{pairs} from {where} ({os.fspath(entry.resolved)})"
