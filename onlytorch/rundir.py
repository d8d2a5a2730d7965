"""A run directory's lifecycle on disk: the lock one process holds for the run's whole life, and the
atomic writes of its small files.

The lock is an OS lock (``flock``) on ``RUN_DIR/.lock``, a file holding the holder's pid. The OS
drops the lock when its process ends, however it ends, so a lock can never outlive its holder;
the file itself stays behind after a SIGKILL. A clean release deletes the file (while still
holding the lock), so a ``.lock`` file found with a pid in it and no process holding it means the
previous holder was killed: ``stale_pid`` says so. Because a file may be deleted between another
process's ``open`` and its ``flock``, a holder checks after locking that the path still names the
file it locked, and starts again otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pathlib
import socket
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

LOCK_NAME = ".lock"

# write errors that mean "no room": the disk, a quota, or a file size limit (ulimit -f)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class RunLocked(Exception):
    """Another live process holds the run directory's lock."""

    def __init__(self, path: pathlib.Path, pid: int | None, host: str | None) -> None:
        self.path, self.pid, self.host = path, pid, host
        who = f"pid {pid}" if pid is not None else "a process whose pid is not recorded yet"
        if host and host != socket.gethostname():
            who += f" on host {host}"
        super().__init__(
            f"{path} is in use by another onlytorch process ({who}); wait for it to end or stop it, "
            "or choose another --out"
        )


class RunLock:
    """The lock of one run directory, held from ``acquire`` to ``release``."""

    def __init__(self, run_dir: pathlib.Path) -> None:
        self.path = run_dir / LOCK_NAME
        self.fd: int | None = None
        # the pid a killed holder left in the file (None: the last holder released it cleanly)
        self.stale_pid: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise RunLocked naming the holder; OSError if the file cannot be made."""
        while True:
            # O_NOFOLLOW: a .lock that is a symbolic link (a crafted run directory) must not make the
            # holder truncate and write the file it points to, outside the run directory
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(self.path, flags, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                pid, host = _holder(self.path)
                raise RunLocked(self.path.parent, pid, host) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its holder released (deleted) it between our open and our flock
                os.close(fd)
                continue
            self.fd = fd
            break
        try:
            previous = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
            self.stale_pid = int(previous[0]) if previous and previous[0].isdigit() else None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        except BaseException as e:
            self.release()
            if isinstance(e, OSError) and e.filename is None:
                raise OSError(e.errno, e.strerror, str(self.path)) from None
            raise
        return self

    def release(self) -> None:
        """Delete the file, then drop the lock (in this order: see the module's docstring)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)  # closing the last descriptor drops the flock
        self.fd = None


def _holder(path: pathlib.Path, wait: bool = True) -> tuple[int | None, str | None]:
    """The pid (and host) written in a lock file; a holder writes it just after locking, so wait
    for it a little."""
    for _ in range(50 if wait else 1):
        try:
            words = path.read_text(encoding="utf-8", errors="replace").split()
        except OSError:
            words = []
        if words and words[0].isdigit():
            return int(words[0]), (words[1] if len(words) > 1 else None)
        if wait:
            time.sleep(0.01)
    return None, None


def holder(run_dir: pathlib.Path) -> int | None:
    """The pid of the live process holding ``run_dir``'s lock, or None when no process holds it
    (none ever did, it released it, or it was killed). Only looks: never creates the lock file."""
    path = run_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, _ = _holder(path)
            return pid if pid is not None else -1
        except OSError:
            return None
        return None
    finally:
        os.close(fd)  # also drops the shared lock just taken


def left_pid(run_dir: pathlib.Path) -> int | None:
    """The pid written in a lock file that no process holds (its holder was killed)."""
    return _holder(run_dir / LOCK_NAME, wait=False)[0]


def killed_message(info: dict[str, Any], pid: int | None) -> str:
    """What to record for a run.json that says ``running`` while no process holds the run's lock:
    the process that wrote it (``pid``, if known) ended without recording its end."""
    who = f" (pid {pid})" if pid is not None else ""
    return (
        f"killed: the process that ran it{who} stopped without recording its end "
        f"(SIGKILL, the out-of-memory killer, a power cut) after step {info.get('steps_done', '?')}"
    )


def write_atomic(path: pathlib.Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through ``write(fh)`` so that a reader sees the old file or the new one, never
    half: a temporary file of a unique name in the same folder (two writers never share one), fsync,
    rename. The temporary file is removed when anything fails; an OSError names ``path``, not it."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from the run's other readers
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and (e.filename is None or str(e.filename) == tmp):
            # name the file the user knows (a write error names none; the temporary name means nothing)
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def write_text_atomic(path: pathlib.Path, text: str) -> None:
    """``write_atomic`` of a text, UTF-8."""
    write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))


def target_of_temporary(name: str) -> str:
    """The file an atomic write's temporary file (``DIR/.NAME.XXXXXXXX.tmp``) stands for, for a
    message; any other name unchanged."""
    folder, base = os.path.split(name)
    if base.startswith(".") and base.endswith(".tmp") and base.count(".") >= 3:
        return os.path.join(folder, base[1:-4].rsplit(".", 1)[0])
    return name


def remove_stale_temporaries(run_dir: pathlib.Path) -> None:
    """Remove the temporary files of atomic writes (``.NAME.XXXX.tmp``, in the run folder and in
    checkpoints/) that a process killed in the middle of a write left behind. Only the lock's holder
    calls this, so no live writer owns any of them."""
    for folder in (run_dir, run_dir / "checkpoints"):
        for stale in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()


def overwrite_in_place(path: pathlib.Path, text: str) -> bool:
    """The last resort when the disk is full: write ``text`` over ``path``'s own blocks (no new
    file, so no new space) when it fits in what the file already occupies. Not atomic, which is
    why it is only a fallback. False when it does not fit."""
    data = text.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if len(data) > max(st.st_size, st.st_blocks * 512):
            return False
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
