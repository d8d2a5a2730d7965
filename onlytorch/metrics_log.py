"""A run's metrics log on disk: ``metrics.jsonl`` (one JSON row per line, the record) and
``metrics.csv`` (the same rows as a table, derived from them).

What a kill (even SIGKILL) can do to the log, and why no completed row is ever lost or torn:

- A row is appended with one ``write()`` of the whole line, so a kill leaves at most one torn line,
  the last. Every row of a step is written before that step's checkpoint, so a torn line always
  belongs to a step past the last checkpoint.
- On ``--resume`` the log is cut back to the checkpoint's step: rows past it (logged by a process
  killed before its next checkpoint; they will be logged again, identically) and a torn last line
  are dropped. The kept lines are written, byte for byte, to a temporary file that replaces the
  log by a rename: a kill during the cut leaves the old log or the new one, never a mix. Nothing
  is rewritten when there is nothing to drop.
- ``metrics.csv`` is only ever replaced whole (by a rename) or appended a whole line at a time, and
  is rebuilt from the log on every resume.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pathlib
from dataclasses import dataclass
from typing import Any

from .rundir import write_text_atomic

LOG, TABLE = "metrics.jsonl", "metrics.csv"


@dataclass
class Record:
    """One row of the metrics log: the step and its values."""

    step: int
    values: dict[str, float]


def append_line(path: pathlib.Path, line: str) -> None:
    """Append one complete line with one write() call: a kill cannot leave half of it followed by
    more (a regular file takes the whole buffer at once; the loop is for a disk filling up)."""
    data = line.encode("utf-8")
    # O_NOFOLLOW: a log that is a symbolic link (a crafted run directory) is refused (ELOOP), never
    # appended to wherever it points
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o666)
    try:
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


def row_line(row: dict[str, Any]) -> str:
    return json.dumps(row) + "\n"


def table_columns(rows: list[dict[str, Any]]) -> dict[str, None]:
    """A column for every key any row has, in order of appearance."""
    known: dict[str, None] = {}
    for row in rows:
        known.update(dict.fromkeys(row))
    return known


def table_text(columns: list[str], rows: list[dict[str, Any]], header: bool = True) -> str:
    """The table's lines: a missing value is an empty cell (csv.DictWriter's rule, without its
    per-row check of the keys, which makes it several times slower)."""
    out = io.StringIO()
    w = csv.writer(out)
    if header:
        w.writerow(columns)
    w.writerows([row.get(k) for k in columns] for row in rows)
    return out.getvalue()


def write_table(run_dir: pathlib.Path, rows: list[dict[str, Any]]) -> list[str]:
    """Replace metrics.csv whole (atomically) with ``rows``; its columns. No rows: no table."""
    if not rows:
        (run_dir / TABLE).unlink(missing_ok=True)
        return []
    columns = list(table_columns(rows))
    write_text_atomic(run_dir / TABLE, table_text(columns, rows))
    return columns


def cut_to(run_dir: pathlib.Path, step: int) -> list[dict[str, Any]]:
    """Cut the log back to ``step`` (the checkpoint a resume continues from) as the module's
    docstring says; the kept rows. The caller rebuilds the table from them (write_table)."""
    path = run_dir / LOG
    rows, text, changed = read_until(path, step)
    if changed:
        write_text_atomic(path, text)
        _fsync_dir(run_dir)  # the rename itself survives a power cut before new rows are appended
    return rows


def read_until(path: pathlib.Path, step: int) -> tuple[list[dict[str, Any]], str, bool]:
    """The rows of the log at or before ``step``, the text of the lines to keep, and whether the
    file holds anything else (rows past ``step``, or a last line without its newline: torn).

    A line that is not a row (not JSON, or without an integer ``step``) was not written by
    onlytorch as it stands (a damaged file): it is not a row, but it is kept where it is when the
    rows around it are (it sits after a row at or before ``step``), so that nothing unreadable is
    thrown away by a resume; ``onlytorch report`` names it. (Bytes that are not UTF-8 in such a
    line become U+FFFD if the log is rewritten.)"""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [], "", False
    *lines, torn = text.split("\n")  # torn: what follows the last newline ("" in a whole file)
    rows: list[dict[str, Any]] = []
    kept: list[str] = []
    at = 0  # the step of the last row read: an unreadable line goes with the row before it
    for line in lines:
        row = _row(line)
        if row is not None:
            at = row["step"]
        if at <= step:
            kept.append(line)
            if row is not None:
                rows.append(row)
    changed = bool(torn) or len(kept) < len(lines)
    return rows, "".join(line + "\n" for line in kept), changed


def _row(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: a damaged line of thousands of "["
        return None
    if not isinstance(row, dict):
        return None
    step = row.get("step")
    return row if isinstance(step, int) and not isinstance(step, bool) else None


def _fsync_dir(path: pathlib.Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot open or sync a directory
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
