"""Claiming a run directory for one training: where a run goes (``runs/NAME``, numbered when taken,
or the folder asked for), the lock held for its whole life, and what a run.json left ``running``
by a killed process is recorded as. The refusals are exceptions that say why (docs/runs.md)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pathlib
from dataclasses import dataclass
from typing import Any

from .rundir import RunLock, RunLocked, killed_message, write_text_atomic


class FitError(Exception):
    """onlytorch.fit or onlytorch.evaluate_checkpoint refused to start; nothing was trained or
    written. The message says why (it names the command line's options, e.g. --resume for
    ``resume=True``)."""


class Refused(FitError):
    """What was asked does not fit the spec or the run directory (the CLI's usage errors, exit 2):
    a run directory that already holds a run, --resume without a checkpoint, a missing split."""


class RunNameUnusable(Refused):
    """No run directory was given and the spec's name cannot name a folder under runs/."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"the spec's name {name!r} cannot name a folder under runs/; give --out RUN_DIR")


class RunDirUnusable(FitError):
    """The run directory cannot be made or locked: ``error`` (an OSError) says why, for ``path``."""

    def __init__(self, path: pathlib.Path, error: OSError) -> None:
        self.path, self.error = path, error
        super().__init__(f"cannot use the run directory {path}: {error.strerror or error}")


@dataclass
class Claim:
    """A run directory this process holds the lock of. ``created``: this process made the folder,
    so it removes it again if it is left empty (a run stopped before writing anything)."""

    path: pathlib.Path
    lock: RunLock
    created: bool

    def release(self) -> None:
        self.lock.release()
        if self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()


def _lock(path: pathlib.Path, created: bool = False) -> RunLock:
    try:
        return RunLock(path).acquire()
    except (RunLocked, OSError) as e:
        if created:  # made for this run and left empty: not left behind
            with contextlib.suppress(OSError):
                path.rmdir()
        if isinstance(e, RunLocked):
            raise Refused(str(e)) from None
        raise RunDirUnusable(pathlib.Path(e.filename) if e.filename else path, e) from None


def claim_run_dir(name: str, out: str | os.PathLike[str] | None, resume: bool) -> Claim:
    """The run directory, locked. Fresh runs without ``out`` get runs/NAME, or runs/NAME-2, -3, ...:
    a number is taken by creating its folder (mkdir fails if another process created it first),
    so two runs started at once never share a directory."""
    if out is not None:
        path = pathlib.Path(out)
        created = False
        if resume:
            if not path.is_dir():
                raise Refused(f"--resume: {path} holds no checkpoint to continue from (checkpoints/last.npz)")
        else:
            try:
                created = not path.is_dir()
                path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise RunDirUnusable(path, e) from None
        return Claim(path, _lock(path, created), created)
    if resume:
        raise Refused("--resume needs --out RUN_DIR: the run to continue")
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        raise RunNameUnusable(name)
    runs = pathlib.Path("runs")
    try:
        runs.mkdir(exist_ok=True)
    except OSError as e:
        raise RunDirUnusable(runs, e) from None
    for i in itertools.count(1):
        path = runs / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise RunDirUnusable(path, e) from None
        try:
            return Claim(path, RunLock(path).acquire(), True)
        except RunLocked:
            continue  # another process, told --out runs/NAME-i, locked it in between: not ours
        except OSError as e:
            with contextlib.suppress(OSError):
                path.rmdir()
            raise RunDirUnusable(pathlib.Path(e.filename) if e.filename else path, e) from None
    raise AssertionError("unreachable")


def read_info(path: pathlib.Path) -> dict[str, Any] | None:
    """The run's run.json, or None when it is missing, unreadable or not a JSON object."""
    try:
        info = json.loads((path / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def record_killed(path: pathlib.Path, info: dict[str, Any], stale_pid: int | None) -> str:
    """run.json says ``running`` but this process holds the lock: the process that wrote it ended
    without recording how (SIGKILL, the OOM killer, a power cut). Record it as interrupted; says so."""
    message = killed_message(info, stale_pid)
    info = {**info, "status": "interrupted", "message": message}
    try:
        write_text_atomic(path / "run.json", json.dumps(info, indent=2))
    except OSError as e:
        return f"note: {path}: {message} (run.json could not be updated: {e.strerror or e})"
    return f"note: {path}: {message}; recorded as interrupted"
