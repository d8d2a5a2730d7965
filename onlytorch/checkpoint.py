"""Checkpoints: flat ``.npz`` files of numpy arrays, written atomically (a temporary file in the
same folder, then a rename) and read with ``allow_pickle=False``."""

from __future__ import annotations

import os
import pathlib
import zipfile
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import safe_files
from .errors import GraphError
from .rundir import write_atomic


class CheckpointError(GraphError):
    """A checkpoint that cannot be written, read, or does not fit."""


def save(path: str | pathlib.Path, arrays: Mapping[str, np.ndarray]) -> pathlib.Path:
    """Write arrays to path atomically: a reader sees the old file or the new one, never half."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    try:
        write_atomic(path, lambda fh: _write_npz(fh, payload))
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}") from None
    return path


def _write_npz(fh: Any, payload: Mapping[str, np.ndarray]) -> None:
    """What ``np.savez`` writes (stored .npy members, zip64), except when it is cut short (Ctrl-C,
    a full disk): np.savez then may raise a ValueError of zipfile's in place of the interruption
    and leave a ZipFile that writes into the closed file when collected (a traceback on stderr).
    Here the unfinished archive is abandoned: the temporary file it was written to is deleted."""
    zf = zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)
    try:
        for key, value in payload.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, value, allow_pickle=False)
        zf.close()
    except BaseException:
        zf.fp = None  # abandoned: zipfile never touches the file again (not even when collected)
        raise


# What load() accepts: a regular file (a FIFO would block the reader forever, a device never
# ends) of at most max_bytes(), whose members hold at most that many bytes together once
# unpacked, each a .npy array (never a pickle) whose header agrees with the member's size, stored
# or deflated (np.savez / np.savez_compressed). Deflate cannot shrink data more than ~1032-fold,
# so a member claiming more than MAX_RATIO is a forged size (a zip bomb). All of it is checked
# from the zip directory and the .npy headers, before any array is read; zipfile then never
# unpacks more than a member's checked size.
DEFAULT_MAX_BYTES = 8 * 2**30
MAX_RATIO = 1100
MAX_ENTRIES = 100_000
_NPY_HEADER_MAX = 65_536  # an .npy header is at most this long (numpy's own limit is 10,000)
MAX_BYTES_ENV = "ONLYTORCH_MAX_CHECKPOINT_BYTES"


def max_bytes() -> int:
    """The size bound of a checkpoint (file and arrays): $ONLYTORCH_MAX_CHECKPOINT_BYTES, else the
    smaller of 8 GiB and half the machine's memory."""
    text = os.environ.get(MAX_BYTES_ENV)
    if text:
        try:
            value = int(text)
        except ValueError:
            raise CheckpointError(f"{MAX_BYTES_ENV} must be a number of bytes, not {text[:40]!r}") from None
        if value <= 0:
            raise CheckpointError(f"{MAX_BYTES_ENV} must be a positive number of bytes, not {value}")
        return value
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return DEFAULT_MAX_BYTES
    return min(DEFAULT_MAX_BYTES, max(memory // 2, 1))


class Checkpoint(dict[str, np.ndarray]):
    """A loaded checkpoint: its entries by name, and the file they came from (``path``), which
    restore errors name."""

    def __init__(self, entries: Mapping[str, np.ndarray], path: str | pathlib.Path) -> None:
        super().__init__(entries)
        self.path = str(path)


def load(path: str | pathlib.Path) -> Checkpoint:
    """The arrays of a checkpoint, read with ``allow_pickle=False`` after the checks above."""
    path = pathlib.Path(path)
    limit = max_bytes()
    hint = f" (set {MAX_BYTES_ENV} to allow larger checkpoints)"
    try:
        fh = safe_files.open_regular(path, limit, "checkpoint")
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except safe_files.RefusedFile as e:
        more = hint if "limit" in e.reason else " (a checkpoint is an .npz file written by onlytorch train)"
        raise CheckpointError(f"cannot read checkpoint {path}: {e.reason}{more}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    with fh:
        try:
            headers = safe_files.npz_headers(fh, path, limit, "checkpoint")
            with zipfile.ZipFile(fh) as zf:
                _check_members(path, zf, headers)
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as data:
                return Checkpoint({k: data[k] for k in data.files}, path)
        except CheckpointError:
            raise
        except safe_files.NotAnArchive:
            raise CheckpointError(
                f"cannot read checkpoint {path}: not an .npz archive (truncated, or another kind of file)"
            ) from None
        except safe_files.RefusedFile as e:
            # its message names the member: "checkpoint PATH: array 'x' unpacks to ..."
            raise CheckpointError(f"cannot read {e}{hint if 'limit' in e.reason else ''}") from None
        except zipfile.BadZipFile as e:
            raise CheckpointError(f"cannot read checkpoint {path}: {e} (the file is damaged)") from None
        except (OSError, ValueError, EOFError, zlib.error, NotImplementedError, RuntimeError) as e:
            raise CheckpointError(f"cannot read checkpoint {path}: {e} (the file is damaged)") from None


def _check_members(path: pathlib.Path, zf: zipfile.ZipFile, headers: Mapping[str, safe_files.NpyHeader]) -> None:
    """What npz_headers leaves to the reader: members that are not arrays, pickled arrays, other
    compressions, forged sizes, and arrays whose data is not exactly what their member holds."""
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise CheckpointError(f"cannot read checkpoint {path}: {len(infos):,} entries, more than {MAX_ENTRIES:,}")
    for info in infos:
        name = info.filename.removesuffix(".npy")
        where = f"cannot read checkpoint {path}: entry {safe_files.short_repr(name)}"
        if not info.filename.endswith(".npy") or name not in headers:
            raise CheckpointError(f"{where} is not a numpy array (.npy member)")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(
                f"{where} uses zip compression method {info.compress_type}; checkpoints are stored or deflated"
            )
        if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise CheckpointError(
                f"{where} claims to inflate {info.compress_size:,} bytes to {info.file_size:,}, more than "
                f"deflate can ({MAX_RATIO}-fold): a zip bomb or a forged size, not a checkpoint"
            )
        header = headers[name]
        if header.dtype.hasobject:
            raise CheckpointError(
                f"{where} holds Python objects (a pickled array): checkpoints hold numbers and text only, "
                "and pickles are never loaded (loading one can run code)"
            )
        if header.nbytes > info.file_size or info.file_size - header.nbytes > _NPY_HEADER_MAX:
            raise CheckpointError(
                f"{where}: its header claims {header.nbytes:,} bytes of data but the entry holds "
                f"{info.file_size:,} bytes (a forged or damaged file)"
            )


def with_prefix(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries under ``prefix/``, with the prefix removed."""
    p = prefix + "/"
    return {k[len(p) :]: v for k, v in arrays.items() if k.startswith(p)}


# ---------------------------------------------------------------- checks of entries
#
# The parts of a checkpoint (optimizers, schedules, batchers, environments) check their own
# entries with these before anything is restored. ``where`` is the prefix of the part's entries
# in the checkpoint ("opt/d_opt/"), so that a message names the entry as the file holds it;
# ``error`` is the part's error class (DataError for data, CheckpointError otherwise).

ErrorClass = type[Exception]


def describe(a: np.ndarray) -> str:
    """'a float64 array of shape (3, 2)', '1.5 (float64)', "text 'adam'" ... for messages."""
    if a.dtype.kind in "US":
        return f"text {str(a.reshape(-1)[0])[:40]!r}" if a.size == 1 else f"an array of text of shape {a.shape}"
    if a.ndim == 0:
        return f"{str(a.item())[:40]} ({a.dtype})"
    return f"a {a.dtype} array of shape {a.shape}"


def entry(state: Mapping[str, Any], key: str, where: str = "", error: ErrorClass = CheckpointError) -> np.ndarray:
    """The array under key; a clear error when it is missing or not an array of numbers/text."""
    if key not in state:
        raise error(f"entry '{where}{key}' is missing")
    value = state[key]
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except Exception:
            raise error(f"entry '{where}{key}' is not an array") from None
    if value.dtype.hasobject:
        raise error(f"entry '{where}{key}' holds Python objects, not numbers")
    return value


def saved_state(
    state: Mapping[str, Any], kind: str, name: str, owner: str, lead: str, where: str = ""
) -> dict[str, np.ndarray]:
    """The arrays of an optimizer's or schedule's state dict, once its ``kind`` entry (``optimizer`` or
    ``schedule``) says it was saved by ``name``; GraphError (prefixed with ``lead``) otherwise."""
    try:
        d = {k: np.asarray(state[k]) for k in state}
    except Exception as e:
        raise GraphError(f"{owner}.load_state_dict needs a mapping of names to arrays: {e}") from None
    saved = d.get(kind)
    saved_name = str(saved) if saved is not None and saved.shape == () and saved.dtype.kind == "U" else None
    if saved_name != name:
        shown = repr(saved_name) if saved is None or saved_name is not None else f"({describe(saved)})"
        missing = " is missing" if saved is None else ""
        raise GraphError(f"{lead}the state was saved by {kind} {shown}, not {name!r} (entry '{where}{kind}'{missing})")
    return d


def invalid_hyper_message(
    check: Callable[[dict[str, Any]], object], own: dict[str, Any], saved: dict[str, Any], where: str, error: GraphError
) -> str:
    """The message for saved hyper-parameters that ``check`` refuses, naming the entry at fault: the
    one that is refused beside the owner's own (valid) values of the others."""
    for key, value in saved.items():
        try:
            check({**own, key: value})
        except GraphError as e:
            return f"'{where}hyper/{key}' is invalid: {e}"
    return f"the saved hyper-parameters ('{where}hyper/...') are invalid together: {error}"


def floats(
    state: Mapping[str, Any],
    key: str,
    where: str = "",
    shape: tuple[int, ...] | None = None,
    error: ErrorClass = CheckpointError,
    what: str = "",
) -> np.ndarray:
    """A finite real floating array (of the given shape)."""
    a = entry(state, key, where, error)
    need = f"a float array of shape {shape}" if shape is not None else "a float array"
    if a.dtype.kind != "f" or (shape is not None and a.shape != tuple(shape)):
        raise error(f"entry '{where}{key}' is {describe(a)}; {what or 'it'} needs {need}")
    if not np.isfinite(a).all():
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        raise error(f"entry '{where}{key}' holds {bad} NaN or infinite value{'s' * (bad != 1)}")
    return a


def integers(
    state: Mapping[str, Any],
    key: str,
    where: str = "",
    shape: tuple[int, ...] | None = None,
    low: int | None = 0,
    high: int | None = None,
    error: ErrorClass = CheckpointError,
) -> np.ndarray:
    """An integer array (of the given shape) with every value in [low, high)."""
    a = entry(state, key, where, error)
    if a.dtype.kind not in "iu" or (shape is not None and a.shape != tuple(shape)):
        need = f"an integer array of shape {shape}" if shape is not None else "integers"
        raise error(f"entry '{where}{key}' is {describe(a)}, not {need}")
    if a.size and low is not None and int(a.min()) < low:
        raise error(f"entry '{where}{key}' holds {int(a.min())}, below the least allowed value {low}")
    if a.size and high is not None and int(a.max()) >= high:
        raise error(f"entry '{where}{key}' holds {int(a.max())}; its values must be below {high}")
    return a


def count(
    state: Mapping[str, Any],
    key: str,
    where: str = "",
    low: int = 0,
    high: int | None = None,
    error: ErrorClass = CheckpointError,
) -> int:
    """A single integer in [low, high) (a step, a position)."""
    a = entry(state, key, where, error)
    if a.shape != () or a.dtype.kind not in "iu":
        raise error(f"entry '{where}{key}' is {describe(a)}, not a single integer")
    value = int(a)
    if value < low or (high is not None and value >= high):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise error(f"entry '{where}{key}' is {value}; it must be an integer {bound}")
    return value


def text(state: Mapping[str, Any], key: str, where: str = "", error: ErrorClass = CheckpointError) -> str:
    a = entry(state, key, where, error)
    if a.shape != () or a.dtype.kind != "U":
        raise error(f"entry '{where}{key}' is {describe(a)}, not a name")
    return str(a)


def unexpected(
    state: Mapping[str, Any], known: set[str], where: str = "", error: ErrorClass = CheckpointError, what: str = ""
) -> None:
    """Refuse entries that no part of the spec wrote (another spec's, or forged)."""
    extra = sorted(set(state) - known)
    if extra:
        shown = ", ".join(f"'{where}{k}'" for k in extra[:5]) + (
            f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        )
        raise error(f"unexpected entr{'ies' if len(extra) > 1 else 'y'} {shown}{what}")
