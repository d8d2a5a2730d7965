"""Checkpoints: flat ``.npz`` files of numpy arrays, written atomically (a temporary file in the
same folder, then a rename) and read with ``allow_pickle=False``."""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import GraphError


class CheckpointError(GraphError):
    """A checkpoint that cannot be written, read, or does not fit."""


def save(path: str | pathlib.Path, arrays: Mapping[str, np.ndarray]) -> pathlib.Path:
    """Write arrays to path atomically: a reader sees the old file or the new one, never half."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide checkpoints from the run's other readers
        with os.fdopen(fd, "wb") as fh:
            payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}") from None
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def load(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    path = pathlib.Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"cannot read checkpoint {path}: not an .npz archive (truncated, or another kind of file)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None


def with_prefix(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries under ``prefix/``, with the prefix removed."""
    p = prefix + "/"
    return {k[len(p) :]: v for k, v in arrays.items() if k.startswith(p)}
