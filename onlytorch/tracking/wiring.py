"""Which trackers a fit runs, and the calls from the training run to them (onlytorch/app.py's
_Fit holds one :class:`Session`).

The rules (docs/runs.md):

- TensorBoard runs when tensorboardX can be imported and neither ``fit(tensorboard=False)`` /
  ``onlytorch train --no-tensorboard`` nor the spec's ``logging: {tensorboard: false}`` switches it
  off: on by default when the extra is installed, as Lightning does. Without tensorboardX it is
  silently off, unless it was asked for by name (``fit(tensorboard=True)`` or the spec's own
  ``logging: {tensorboard: true}``): then the fit is refused (exit 2) naming the extra.
- MLflow runs when a tracking URI is given (``fit(mlflow=URI)`` / ``--mlflow URI``, which wins
  over the spec's ``logging.mlflow.tracking_uri``); without mlflow the fit is refused naming the extra.

Nothing here imports tensorboardX or mlflow: the trackers do, when they start."""

from __future__ import annotations

import importlib.util
import io
from typing import TYPE_CHECKING, Any

from ..runclaim import Refused
from .hub import Tracker, Trackers, TrackingContext

if TYPE_CHECKING:
    import numpy as np

    from ..compile import Compiled
    from ..run import Run

__all__ = ["Session", "available", "choose_trackers", "samples_picture"]

TENSORBOARD_EXTRA = "pip install 'onlytorch[tensorboard]'"
MLFLOW_EXTRA = "pip install 'onlytorch[mlflow]'"


def available(module: str) -> bool:
    """Whether ``module`` can be imported (found without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def choose_trackers(compiled: Compiled, tensorboard: bool | None = None, mlflow: str | None = None) -> Trackers:
    """The trackers of a fit of ``compiled`` (the module docstring's rules); Refused when one that
    was asked for cannot run."""
    logging = compiled.spec.logging
    trackers = Trackers()
    wanted = tensorboard if tensorboard is not None else (logging.tensorboard if logging is not None else True)
    if wanted:
        if available("tensorboardX"):
            from .tensorboard import TensorBoardTracker

            trackers.add(TensorBoardTracker())
        elif tensorboard is True or (tensorboard is None and logging is not None and logging.tensorboard_asked()):
            raise Refused(
                "TensorBoard logging was asked for, but tensorboardX is not installed: "
                f"{TENSORBOARD_EXTRA} (or switch it off: --no-tensorboard, logging: {{tensorboard: false}})"
            )
    settings = logging.mlflow if logging is not None else None
    uri = mlflow or (settings.tracking_uri if settings is not None else None)
    if uri:
        trackers.add(
            _mlflow_tracker(uri, settings.experiment if settings else None, settings.run_name if settings else None)
        )
    return trackers


def _mlflow_tracker(uri: str, experiment: str | None, run_name: str | None) -> Tracker:
    if not available("mlflow"):
        raise Refused(f"MLflow logging ({uri}) needs mlflow, which is not installed: {MLFLOW_EXTRA}")
    try:
        from .mlflow_tracker import MlflowTracker  # type: ignore[import-not-found, unused-ignore]
    except ImportError as e:
        raise Refused(f"MLflow logging ({uri}) is not available: {e}") from None
    tracker: Tracker = MlflowTracker(uri, experiment, run_name)
    return tracker


def samples_picture(run: Run) -> tuple[np.ndarray | None, bytes | None]:
    """The generated samples in run.path/samples.npz and the report's picture of them as PNG bytes
    (None without matplotlib, or when the report draws none)."""
    from .. import report

    notes: list[str] = []
    samples = report.read_samples(run.path / "samples.npz", notes)
    fake = samples.get("fake") if samples is not None else None
    if samples is None or not available("matplotlib"):
        return fake, None
    # the report's own drawing (one picture of samples, not two that drift apart)
    fig = report.draw_samples(report.Run(path=run.path, info=dict(run.info), rows=[], samples=samples))
    if fig is None:
        return fake, None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    return fake, buf.getvalue()


class Session:
    """The trackers of one fit, fed by the run: ``start`` once run.json is written, every row the
    run logs (Run.row_listeners), ``after_evaluation`` after each evaluation, ``end`` once the
    final status is recorded (at most once; ``close`` ends a session left open)."""

    def __init__(self, trackers: Trackers) -> None:
        self.trackers = trackers
        self.run: Run | None = None
        self.ended = False
        self._samples_seen: tuple[int, int, int] | None = None

    def start(self, run: Run, resumed: bool) -> None:
        if not self.trackers:
            return
        self.run = run
        spec_file = run.path / "spec.yaml"
        ctx = TrackingContext(
            run_dir=run.path,
            resumed=resumed,
            start_step=int(run.trainer.step),
            resolved_spec=run.resolved,
            spec_text=spec_file.read_text(encoding="utf-8") if spec_file.exists() else "",
            overrides=list(run.info.get("overrides") or []),
            seed=int(run.c.spec.seed),
            name=run.c.spec.name,
            run_json=dict(run.info),
        )
        self._samples_seen = self._samples_key()  # samples of a previous process are not this one's
        self.trackers.start(ctx)
        run.row_listeners.append(self.trackers.log)

    def _samples_key(self) -> tuple[int, int, int] | None:
        if self.run is None:
            return None
        try:
            st = (self.run.path / "samples.npz").stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)  # written by a rename: a new file each time

    def after_evaluation(self, step: int) -> None:
        """Report the samples this evaluation drew (samples.npz rewritten), if any."""
        run = self.run
        if run is None or not self.trackers or self.ended:
            return
        ev = run.c.spec.eval
        if ev is None or ev.samples is None:
            return
        key = self._samples_key()
        if key is None or key == self._samples_seen:
            return
        self._samples_seen = key
        try:
            fake, png = samples_picture(run)
        except Exception as e:  # a picture is never worth the run
            self.trackers.warn(f"warning: no samples picture for the trackers at step {step} ({type(e).__name__}: {e})")
            return
        self.trackers.samples(step, png, fake)

    def end(self, status: str, run_json: dict[str, Any]) -> None:
        if self.run is None or self.ended:
            return
        self.ended = True
        self.trackers.end(status, dict(run_json))

    def close(self) -> None:
        """End a session the run left open (an exception past every recorded ending)."""
        if self.run is not None and not self.ended:
            status = self.run.info.get("status")
            self.end(status if isinstance(status, str) and status != "running" else "failed", self.run.info)
