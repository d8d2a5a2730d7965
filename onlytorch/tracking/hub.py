"""The tracking hub: what a training run tells the experiment trackers, and the rule that a
tracker never fails the run.

A tracker subclasses :class:`Tracker` and overrides what it needs; :class:`Trackers` holds the
trackers of one fit and calls each in turn. A tracker that raises is switched off for the rest of
the run with one warning line naming it: the run directory (metrics.jsonl, checkpoints, run.json)
is the record, a tracker only mirrors it.

The calls, in order (onlytorch/app.py makes them, through wiring.py):

- ``start(ctx)`` once the run directory is claimed and run.json written, fresh or resumed (on a
  resume, metrics.jsonl has already been cut back to the checkpoint: it holds exactly the rows of
  steps up to ``ctx.start_step``);
- ``log(record)`` for every row appended to metrics.jsonl, in order (the row as written: ``step``,
  ``kind`` and the values);
- ``samples(step, picture_png, samples)`` after each evaluation that drew generator samples;
- ``end(status, run_json)`` once the run's final status is recorded (completed, early_stopped,
  diverged, interrupted, failed): the final evaluation, best.npz and run.json are on disk."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Tracker", "Trackers", "TrackingContext", "flatten_spec"]


@dataclass
class TrackingContext:
    """What a tracker knows of the run when it starts."""

    run_dir: pathlib.Path
    resumed: bool
    start_step: int  # the step training continues from: 0, or the checkpoint's on a resume
    resolved_spec: dict[str, Any]  # the resolved spec as written to spec.yaml
    spec_text: str  # spec.yaml's text
    overrides: list[str] = field(default_factory=list)  # --set key=value texts (seed=N last), as run.json
    seed: int = 0
    name: str = ""
    run_json: dict[str, Any] = field(default_factory=dict)  # run.json as written at the start


class Tracker:
    """A tracker of training runs; every method does nothing unless overridden. ``name`` is what
    the warning line calls it when it fails."""

    name = "tracker"

    def start(self, ctx: TrackingContext) -> None:
        """The run directory is claimed and run.json written (fresh or resumed)."""

    def log(self, record: dict[str, Any]) -> None:
        """A row appended to metrics.jsonl (``step``, ``kind`` and the values)."""

    def samples(self, step: int, picture_png: bytes | None, samples: np.ndarray | None) -> None:
        """An evaluation at ``step`` drew generator samples: the report's samples picture (PNG
        bytes; None without matplotlib) and the samples themselves."""

    def end(self, status: str, run_json: dict[str, Any]) -> None:
        """The run ended with run.json's final ``status``; release what the tracker holds."""


def flatten_spec(resolved_spec: dict[str, Any]) -> dict[str, Any]:
    """The resolved spec as dotted keys (``train.steps``, ``modules.g.layers.0.units``), the values
    as they are: what trackers show as a run's parameters. The same flattening as the spec hash's."""
    from ..run import _flatten

    return _flatten(resolved_spec)


def _stderr_warning(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Trackers:
    """The trackers of one fit, called in order. A tracker that raises (any Exception) is disabled
    for the rest of the run after one warning line (``warn``, default: stderr) naming it and what
    failed; nothing a tracker does fails the run."""

    def __init__(self, trackers: Iterable[Tracker] = (), warn: Callable[[str], None] | None = None) -> None:
        self.trackers: list[Tracker] = list(trackers)
        self.disabled: dict[str, str] = {}  # tracker name -> the warning it was disabled with
        self.warn = warn or _stderr_warning
        self._off: set[int] = set()

    def add(self, tracker: Tracker) -> None:
        self.trackers.append(tracker)

    def __len__(self) -> int:
        return len(self.active())

    def __iter__(self) -> Iterator[Tracker]:
        return iter(self.active())

    def __bool__(self) -> bool:
        return bool(self.active())

    def active(self) -> list[Tracker]:
        return [t for t in self.trackers if id(t) not in self._off]

    def _each(self, what: str, call: Callable[[Tracker], None]) -> None:
        for t in self.active():
            try:
                call(t)
            except Exception as e:  # a tracker's bug, its server or its disk: never the run's failure
                self._off.add(id(t))
                name = getattr(t, "name", type(t).__name__)
                text = (
                    f"warning: the {name} tracker failed in {what} ({type(e).__name__}: {e}); "
                    "it is off for the rest of this run (the run directory still records everything)"
                )
                self.disabled[name] = text
                self.warn(text)

    def start(self, ctx: TrackingContext) -> None:
        self._each("start", lambda t: t.start(ctx))

    def log(self, record: dict[str, Any]) -> None:
        self._each("log", lambda t: t.log(record))

    def samples(self, step: int, picture_png: bytes | None, samples: np.ndarray | None) -> None:
        self._each("samples", lambda t: t.samples(step, picture_png, samples))

    def end(self, status: str, run_json: dict[str, Any]) -> None:
        self._each("end", lambda t: t.end(status, run_json))
