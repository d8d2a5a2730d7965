"""Reading a run directory: run.json, metrics.jsonl (tolerating a run still writing or one that
crashed), spec.yaml, the checkpoints' names and the generated samples."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import NotARunDir, ReportError
from .samples import read_samples

NOT_QUANTITIES = {"step", "kind", "time"}


@dataclass
class Run:
    """Everything read from a run directory. ``rows`` are the metrics rows in step order (rows
    logged again for the same step and kind, as after a resume, are merged, later values first);
    ``notes`` say what was skipped or is missing."""

    path: Path
    info: dict[str, Any]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    spec_text: str | None = None
    checkpoints: list[tuple[str, int]] = field(default_factory=list)
    samples: dict[str, np.ndarray] | None = None


def read_run(run_dir: str | Path) -> Run:
    """Read a run directory. Raises :class:`NotARunDir` when there is no ``run.json`` and
    :class:`ReportError` for a broken file (a broken metrics line other than the last)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise NotARunDir(f"{path} is not a directory" if path.exists() else f"{path} does not exist")
    if not (path / "run.json").is_file():
        raise NotARunDir(_not_a_run_dir_message(path))
    run = Run(path=path, info=_read_info(path / "run.json"), rows=[])
    run.rows = _read_rows(path / "metrics.jsonl", run.notes)
    run.spec_text = read_text(path / "spec.yaml")
    run.checkpoints = _list_checkpoints(path / "checkpoints")
    run.samples = read_samples(path / "samples.npz", run.notes)
    return run


def _not_a_run_dir_message(path: Path) -> str:
    inner = sorted(p.parent.name for p in path.glob("*/run.json"))
    hint = f"; it holds run directories: {', '.join(inner[:3])}{', ...' if len(inner) > 3 else ''}" if inner else ""
    return f"{path} is not a run directory (no run.json, which onlytorch train writes){hint}"


def _read_info(path: Path) -> dict[str, Any]:
    text = read_text(path) or ""
    try:
        info = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(info, dict):
        raise ReportError(f"{path} should hold a JSON object, not {type(info).__name__}")
    return info


def read_text(path: Path) -> str | None:
    """The file's text, None when there is no such file; :class:`ReportError` when unreadable."""
    if not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"cannot read {path}: {e}") from None


def _read_rows(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    text = read_text(path)
    if text is None:
        notes.append(f"no {path.name}: nothing logged yet")
        return []
    lines = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    rows = []
    for i, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == lines[-1][0]:
                notes.append(
                    f"skipped the incomplete last line {i} of {path.name} (a run still writing, or one that crashed)"
                )
                break
            raise ReportError(
                f"{path} line {i} is not valid JSON ({e.msg}, column {e.colno}); only the last line may be incomplete"
            ) from None
        rows.append(_check_row(row, path, i))
    if not rows and not lines:
        notes.append(f"{path.name} is empty: nothing logged yet")
    return _merge_repeated_steps(rows, notes)


def _check_row(row: Any, path: Path, line: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ReportError(f"{path} line {line} should be a JSON object, not {type(row).__name__}")
    step = row.get("step")
    if not isinstance(step, int) or isinstance(step, bool):
        raise ReportError(f"{path} line {line} has no integer 'step'")
    return row


def _merge_repeated_steps(rows: list[dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    merged: dict[tuple[int, str], dict[str, Any]] = {}
    repeated = 0
    for row in rows:
        key = (row["step"], str(row.get("kind", "train")))
        if key in merged:
            overlap = (set(merged[key]) & set(row)) - NOT_QUANTITIES
            repeated += bool(overlap)
            merged[key] = {**merged[key], **row}
        else:
            merged[key] = dict(row)
    if repeated:
        notes.append(f"{repeated} step(s) were logged twice (a resumed run?): the later values are used")
    return sorted(merged.values(), key=lambda r: r["step"])


def _list_checkpoints(folder: Path) -> list[tuple[str, int]]:
    """Name and size of every ``.npz`` in the checkpoints folder (one being renamed right now is left out)."""
    found = []
    for p in sorted(folder.glob("*.npz")):
        try:
            found.append((f"{folder.name}/{p.name}", p.stat().st_size))
        except OSError:
            continue
    return found
