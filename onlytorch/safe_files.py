"""Opening files that come from someone else: a spec, a data file, a checkpoint.

A FIFO or a device given as a file blocks forever or never ends (``/dev/zero``), and a file or an
archive member can be far bigger than anything onlytorch should hold in memory. Everything here
decides *before* reading: the file is opened without blocking, checked with ``fstat`` to be a regular
file of at most ``limit`` bytes, and only then read. ``.npz`` archives are judged by their zip
directory and the ``.npy`` headers of their members, never by decompressing them.

Every refusal is a ``RefusedFile`` (an ``OSError``, so callers that already turn ``OSError`` into a
located message keep doing so); its message names the file and says why.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

MiB = 2**20
GiB = 2**30
MAX_SPEC_BYTES = 1 * MiB  # a spec is a few KiB; PyYAML reads ~1 MiB/s, and /dev/zero never ends
MAX_DATA_BYTES = 2 * GiB  # an .npz data file: on disk, and every array as it will be held in memory
MAX_CSV_BYTES = 64 * MiB  # a .csv table: parsing it as text takes ~50 times its size in Python objects
MAX_NPZ_ARRAYS = 10_000  # members of an .npz data file: reading each header takes ~0.5 ms
EXCERPT_CHARS = 40  # at most this many characters of a value read from a file are quoted in a message


class RefusedFile(OSError):
    """A file that is not read: not a regular file, too big, or with an archive member that is."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason or message

    def __str__(self) -> str:
        return str(self.args[0])


class NotAnArchive(RefusedFile):
    """A file given as an .npz that is not a zip archive at all."""


def _size(n: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def human_size(n: int) -> str:
    """``n`` bytes for a message: 4.0 MiB, 16.0 GiB, 12 bytes."""
    return _size(n)


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _check_stat(st: os.stat_result, path: str | os.PathLike[str], limit: int, what: str) -> int:
    if not stat.S_ISREG(st.st_mode):
        kind = _kind(st.st_mode)
        reason = f"it is {kind}, not a regular file" if kind != "not a regular file" else "it is not a regular file"
        raise RefusedFile(f"{what} {os.fspath(path)}: {reason}; refused (only regular files are read)", path, reason)
    if st.st_size > limit:
        reason = f"it holds {_size(st.st_size)}, over the {_size(limit)} limit for {what}"
        raise RefusedFile(f"{what} {os.fspath(path)}: {reason}; refused", path, reason)
    return st.st_size


def _check_name(path: str | os.PathLike[str], what: str) -> None:
    if "\0" in os.fspath(path):
        reason = "the path contains a NUL byte"
        raise RefusedFile(f"{what} {short_repr(os.fspath(path))}: {reason}", path, reason)


def check_regular_file(path: str | os.PathLike[str], limit: int, what: str) -> int:
    """The size of the regular file at path (symlinks followed), or RefusedFile when it is something else
    (a FIFO, a device, a directory) or holds more than ``limit`` bytes. Other OSErrors (no such file, no
    permission) pass through unchanged. Prefer ``open_regular``, which cannot be raced."""
    _check_name(path, what)
    return _check_stat(os.stat(path), path, limit, what)


def open_regular(path: str | os.PathLike[str], limit: int, what: str) -> io.BufferedReader:
    """The file at path opened for binary reading, after checking that it is a regular file of at most
    ``limit`` bytes. Opening is non-blocking, so a FIFO is refused instead of waiting for a writer, and
    the check is made on the opened descriptor, so the file cannot be swapped between check and read."""
    _check_name(path, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        _check_stat(os.fstat(fd), path, limit, what)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (RefusedFile otherwise, also when the file
    grows past the limit while it is read)."""
    with open_regular(path, limit, what) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        reason = f"it holds more than the {_size(limit)} limit for {what}"
        raise RefusedFile(f"{what} {os.fspath(path)}: {reason}; refused", path, reason)
    return data


def expand_user(path: str | os.PathLike[str], what: str) -> Path:
    """``~`` and ``~user`` expanded; RefusedFile naming the path when the user has no home directory."""
    p = Path(path)
    _check_name(p, what)
    try:
        return p.expanduser()
    except RuntimeError:  # pathlib: "Could not determine home directory."
        reason = f"the user in {str(p).split(os.sep, 1)[0]!r} is unknown (no home directory to expand ~ to)"
        raise RefusedFile(f"{what} {short_repr(str(p))}: {reason}", path, reason) from None


def short_repr(value: object, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` of at most about ``limit`` characters of it: what a message may quote of data read
    from a file (escaped, so NULs and control characters show as escapes, and short, so a message cannot
    dump a file), e.g. ``'root:x:0:0:ro'... (31 characters)``."""
    text = repr(value)
    if len(text) <= limit:
        return text
    if isinstance(value, str):
        return f"{value[: max(1, limit - 8)]!r}... ({len(value)} characters)"
    return f"{text[: max(1, limit - 3)]}..."


# ---------------------------------------------------------------- .npz headers


@dataclass(frozen=True)
class NpyHeader:
    """One array of an .npz archive, as its .npy header describes it."""

    name: str  # the member's name without ".npy"
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    member_bytes: int  # the member's uncompressed size, from the zip directory

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize


_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
_HEADER_MAX = 10_000  # bytes of an .npy header that are read: np.load's own limit


def npz_headers(
    fh: IO[bytes], path: str | os.PathLike[str], limit: int, what: str, max_members: int | None = None
) -> dict[str, NpyHeader]:
    """Every ``.npy`` member's header of the zip archive open in ``fh``, checked against ``limit``: no
    member and no array may be bigger than ``limit`` bytes, nor all members together, and no array may
    claim more bytes than its member holds, nor may it hold more than ``max_members`` members (each
    header takes a little time). Nothing but the headers is decompressed. Members that are not ``.npy``
    files are skipped. Raises RefusedFile naming the path and the member."""
    where = f"{what} {os.fspath(path)}"
    try:
        archive = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as e:
        raise NotAnArchive(f"{where}: not an .npz (zip) archive: {e}", path, str(e)) from None
    headers: dict[str, NpyHeader] = {}
    total = 0
    with archive:
        if max_members is not None and len(archive.infolist()) > max_members:
            reason = f"it holds {len(archive.infolist()):,} members, more than the {max_members:,} allowed"
            raise RefusedFile(f"{where}: {reason}; refused", path, reason)
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[: -len(".npy")]
            array = f"array {short_repr(name)}"
            if name in headers:  # np.load would silently read one of them
                reason = f"it holds two members named {short_repr(info.filename)}: which one is meant is ambiguous"
                raise RefusedFile(f"{where}: {reason}", path, reason)
            total += info.file_size
            if info.file_size > limit:
                reason = f"{array} unpacks to {_size(info.file_size)}, over the {_size(limit)} limit"
                raise RefusedFile(f"{where}: {reason}; refused before unpacking", path, reason)
            if total > limit:
                reason = f"its arrays unpack to {_size(total)} together, over the {_size(limit)} limit"
                raise RefusedFile(f"{where}: {reason}; refused before unpacking", path, reason)
            try:
                with archive.open(info) as fp:
                    version = np.lib.format.read_magic(fp)
                    reader = _HEADER_READERS.get(version)
                    if reader is None:
                        raise ValueError(f"unsupported .npy format version {version}")
                    shape, fortran, dtype = reader(fp, max_header_size=_HEADER_MAX)
            except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile, NotImplementedError) as e:
                reason = f"{array} has an unreadable header: {e}"
                raise RefusedFile(f"{where}: {reason}", path, reason) from None
            header = NpyHeader(name, tuple(int(n) for n in shape), dtype, bool(fortran), info.file_size)
            if dtype.hasobject:
                # A pickle's size says nothing of its element count: the byte checks below do not apply,
                # and the reader refuses it (allow_pickle=False) with its own message.
                headers[name] = header
                continue
            claim = f"{array} claims shape {header.shape} of {dtype} ({_size(header.nbytes)})"
            if header.nbytes > limit:
                reason = f"{claim}, over the {_size(limit)} limit"
                raise RefusedFile(f"{where}: {reason}; refused before reading", path, reason)
            if header.nbytes > info.file_size:
                reason = f"{claim} but its member holds only {_size(info.file_size)}: the file is damaged"
                raise RefusedFile(f"{where}: {reason}", path, reason)
            headers[name] = header
    return headers


def read_npz_headers(path: str | os.PathLike[str], limit: int, what: str) -> dict[str, NpyHeader]:
    """``npz_headers`` of the archive at path, opened with ``open_regular`` (so a FIFO, a device or a file
    over ``limit`` bytes is refused before anything is read)."""
    with open_regular(path, limit, what) as fh:
        return npz_headers(fh, path, limit, what)
