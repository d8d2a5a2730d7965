"""TensorBoard event files in RUN_DIR/tensorboard/ (``tensorboard --logdir runs/`` shows every run),
written with tensorboardX (the ``tensorboard`` extra), imported when the tracker starts: its
protocol buffers, summaries and record framing, into one file per process,
``events.out.tfevents.<start step>.onlytorch`` (named by the step it starts at rather than by clock
and host, so that a run directory's files do not depend on when or where it was trained).

What is written: every scalar of every metrics.jsonl row under its metrics name at its step
(losses per phase, ``train/`` metrics, ``lr/`` and ``grad_norm/`` per optimizer, ``eval/`` and
``val/`` values, ``time``, a gym source's ``rollout/`` values); the resolved spec as text (tag
``spec``) and its scalars as hyper-parameters (dotted keys: ``train.steps``, ``optimizers.opt.lr``,
...; the hparams dashboard finds the metrics among the scalars); the report's picture of a
generator's samples (tag ``samples``) at each evaluation that draws them.

Resume: metrics.jsonl is the record. A resumed run's log has been cut back to its checkpoint, and
the event files of the process before may hold steps past it (or lack the last ones it did not
flush): they are deleted and rebuilt from the log, then the run appends, so the events equal the
log with no step twice. The samples pictures of evaluations before a resume are not rebuilt
(samples.npz keeps the last samples only)."""

from __future__ import annotations

import errno
import os
import pathlib
import struct
import sys
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .. import metrics_log
from .hub import Tracker, TrackingContext, flatten_spec

if TYPE_CHECKING:
    import numpy as np

__all__ = ["EVENTS_DIR", "SAMPLES_TAG", "SPEC_TAG", "TensorBoardTracker", "event_file_name", "hparams_of"]

EVENTS_DIR = "tensorboard"  # RUN_DIR/tensorboard/
SPEC_TAG = "spec"  # the text plugin stores it as "spec/text_summary"
SAMPLES_TAG = "samples"
_EVENT_FILE_PREFIX = "events.out.tfevents."
_NOT_SCALARS = ("step", "kind")
_FLUSH_SECONDS = 5.0  # how stale a live dashboard may be (each flush is an fsync)

# run.json's final status -> the hparams dashboard's session status
_SESSION_STATUS = {
    "completed": "STATUS_SUCCESS",
    "early_stopped": "STATUS_SUCCESS",
    "diverged": "STATUS_FAILURE",
    "failed": "STATUS_FAILURE",
    "interrupted": "STATUS_UNKNOWN",  # resumable: neither a success nor a failure yet
}


def event_file_name(start_step: int) -> str:
    return f"{_EVENT_FILE_PREFIX}{start_step:010d}.onlytorch"


def _tensorboardx() -> ModuleType:
    """tensorboardX, imported without torch. Its package imports torch whenever it is installed
    (seconds and hundreds of MB, for an isinstance check of tensors onlytorch never passes);
    a None in sys.modules makes that ``import torch`` fail as if torch were absent, which
    tensorboardX handles. A process that imported torch itself keeps it."""
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        import tensorboardX

        return tensorboardX
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import tensorboardX
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]
    return tensorboardX


def hparams_of(resolved_spec: dict[str, Any]) -> dict[str, str | float | bool]:
    """The hyper-parameters shown for a run: the resolved spec's scalars under dotted keys."""
    out: dict[str, str | float | bool] = {}
    for key, value in flatten_spec(resolved_spec).items():
        if isinstance(value, bool | str):
            out[key] = value
        elif isinstance(value, int | float):
            out[key] = float(value)
    return out


def _png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        raise ValueError("not a PNG picture")
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


class _EventFile:
    """One event file: TFRecord-framed ``Event`` protocol buffers, written as they come (no thread)."""

    def __init__(self, path: pathlib.Path) -> None:
        _tensorboardx()
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.record_writer import masked_crc32c

        self._event, self._crc = Event, masked_crc32c
        # O_NOFOLLOW: never written through a symbolic link (a crafted run directory), as the log is not
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        self._file = os.fdopen(os.open(path, flags, 0o666), "wb")
        self._flushed = time.monotonic()
        self.write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def write(self, event: Any) -> None:
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self._file.write(header + struct.pack("<I", self._crc(header)) + data + struct.pack("<I", self._crc(data)))
        if time.monotonic() - self._flushed > _FLUSH_SECONDS:
            self.flush()

    def add(self, summary: Any, step: int | None = None) -> None:
        event = self._event(wall_time=time.time(), summary=summary)
        if step is not None:
            event.step = step
        self.write(event)

    def flush(self) -> None:
        self._file.flush()
        self._flushed = time.monotonic()

    def close(self) -> None:
        self._file.close()


class TensorBoardTracker(Tracker):
    """Writes the run's TensorBoard event files (see the module docstring)."""

    name = "TensorBoard"

    def __init__(self) -> None:
        self.events: _EventFile | None = None

    def start(self, ctx: TrackingContext) -> None:
        logdir = ctx.run_dir / EVENTS_DIR
        if logdir.is_symlink():
            raise OSError(errno.ELOOP, "a symbolic link, which onlytorch never writes through", str(logdir))
        logdir.mkdir(exist_ok=True)
        for old in logdir.iterdir():
            if old.name.startswith(_EVENT_FILE_PREFIX) and old.is_file():
                old.unlink()
        self.events = _EventFile(logdir / event_file_name(ctx.start_step))
        from tensorboardX.summary import hparams, text

        spec = "    " + ctx.spec_text.rstrip("\n").replace("\n", "\n    ")  # Markdown: a code block
        if ctx.overrides:
            spec = "overrides: " + ", ".join(f"`{o}`" for o in ctx.overrides) + "\n\n" + spec
        self.events.add(text(SPEC_TAG, spec), ctx.start_step)
        # only the session's start: with no experiment summary, the hparams dashboard takes the
        # metrics from the scalars of every run under --logdir
        _, session_start, _ = hparams(hparams_of(ctx.resolved_spec), {})
        self.events.add(session_start)
        rows, _, _ = metrics_log.read_until(ctx.run_dir / metrics_log.LOG, ctx.start_step)
        for row in rows:
            self.log(row)
        self.events.flush()

    def log(self, record: dict[str, Any]) -> None:
        if self.events is None:
            return
        from tensorboardX.proto.summary_pb2 import Summary

        values = [
            Summary.Value(tag=key, simple_value=float(value))
            for key, value in record.items()
            if key not in _NOT_SCALARS and isinstance(value, int | float) and not isinstance(value, bool)
        ]
        if values:
            self.events.add(Summary(value=values), int(record["step"]))

    def samples(self, step: int, picture_png: bytes | None, samples: np.ndarray | None) -> None:
        if self.events is None or picture_png is None:
            return
        from tensorboardX.proto.summary_pb2 import Summary

        width, height = _png_size(picture_png)
        image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=picture_png)
        self.events.add(Summary(value=[Summary.Value(tag=SAMPLES_TAG, image=image)]), step)
        self.events.flush()

    def end(self, status: str, run_json: dict[str, Any]) -> None:
        if self.events is None:
            return
        events, self.events = self.events, None
        try:
            from tensorboardX.proto.api_pb2 import Status
            from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
            from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

            info = SessionEndInfo(
                status=Status.Value(_SESSION_STATUS.get(status, "STATUS_UNKNOWN")), end_time_secs=time.time()
            )
            content = HParamsPluginData(session_end_info=info, version=0).SerializeToString()
            metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams", content=content))
            events.add(Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=metadata)]))
        finally:
            events.close()
