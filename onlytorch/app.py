"""The application layer: train a spec into a run directory (``fit``), with resume, and evaluate a
checkpoint (``evaluate_checkpoint``), exactly as ``onlytorch train`` and ``onlytorch eval`` do (the
CLI calls these). What fit refuses before training raises a ``FitError``; how a training ended
(completed, early_stopped, diverged, interrupted, failed) is the returned ``FitResult`` and
run.json's status.

Signals are the caller's: ``should_stop`` is asked between iterations (True stops the run at an
iteration boundary and writes a checkpoint that ``resume=True`` continues from exactly), and a
``guard`` (the CLI's cli/interrupts.py) may hold signals back while files are written."""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .runclaim import Claim, FitError, Refused, RunDirUnusable, RunNameUnusable, claim_run_dir, read_info, record_killed

if TYPE_CHECKING:
    from .compile import Compiled
    from .evaluation import RunEvaluation
    from .metrics_log import Record
    from .run import Run
    from .spec.diagnostics import Report
    from .tracking.wiring import Session
    from .train import Trainer

__all__ = [
    "BadInput",
    "EvalResult",
    "FitError",
    "FitResult",
    "InvalidSpec",
    "LoadedSpec",
    "Note",
    "Refused",
    "RunDirUnusable",
    "RunNameUnusable",
    "SpecChanged",
    "Started",
    "claim_run_dir",
    "evaluate_checkpoint",
    "failure_message",
    "fit",
    "load_spec",
]


class InvalidSpec(FitError):
    """The spec does not compile: ``report`` holds every diagnostic (``report.render()``)."""

    def __init__(self, spec_file: str, report: Report) -> None:
        self.spec_file, self.report = spec_file, report
        n = len(report.errors)
        super().__init__(f"{spec_file}: invalid ({n} error{'s' if n != 1 else ''})\n{report.render()}")


class BadOverride(FitError, ValueError):
    """An override that is not ``key=value`` (the message says why)."""


class BadInput(FitError):
    """Data or a checkpoint that cannot be used (the CLI's ``error: ...`` lines with exit 2);
    ``hint`` says what to do about it, when there is something."""

    hint: str | None = None


class SpecChanged(BadInput):
    """resume=True on a run of another spec (the keys that differ in ``changes``); force=True continues anyway."""

    hint = "resume with --force to continue anyway"

    def __init__(self, path: pathlib.Path, changes: list[str]) -> None:
        self.path, self.changes = path, changes
        super().__init__(f"the spec changed since {path} was written:\n  " + "\n  ".join(changes))


@dataclass
class LoadedSpec:
    """A compiled spec with where it came from: its file, its compile report (warnings), and the
    overrides as run.json records them (``key=value`` texts, ``seed=N`` last)."""

    compiled: Compiled
    spec_file: str
    report: Report | None = None
    overrides: list[str] = field(default_factory=list)
    init: list[str] = field(default_factory=list)  # the --init paths it was compiled with


def load_spec(
    spec_file: str | os.PathLike[str],
    *,
    seed: int | None = None,
    overrides: Sequence[str] = (),
    allow_outside: bool = False,
    max_memory: int | None = None,
    init: Sequence[str | os.PathLike[str]] = (),
) -> LoadedSpec:
    """Compile a spec file with ``key=value`` overrides (as ``--set``) and a seed; InvalidSpec with
    the report when it does not compile, BadOverride for an override that is not key=value.
    ``init``: checkpoints to load every module of the same name from, as ``--init``."""
    from . import compile as compiler
    from .spec.overrides import parse

    pairs: list[tuple[str, object]] = []
    for item in overrides:
        try:
            pairs.append(parse(item))
        except ValueError as e:
            raise BadOverride(str(e)) from None
    if seed is not None:
        pairs.append(("seed", seed))
    path = os.fspath(spec_file)
    inits = [os.fspath(p) for p in init]
    compiled, report = compiler.compile_file(
        path, pairs, allow_outside=allow_outside, max_memory=max_memory, init=inits
    )
    if compiled is None:
        raise InvalidSpec(path, report)
    return LoadedSpec(compiled, path, report, [*overrides, *([f"seed={seed}"] if seed is not None else [])], inits)


def _loaded(
    spec: Any,
    seed: int | None,
    overrides: Sequence[str],
    allow_outside: bool,
    max_memory: int | None,
    init: Sequence[str | os.PathLike[str]] = (),
) -> LoadedSpec:
    if isinstance(spec, (str, os.PathLike)):
        return load_spec(
            spec, seed=seed, overrides=overrides, allow_outside=allow_outside, max_memory=max_memory, init=init
        )
    if seed is not None or overrides:
        raise TypeError("seed and overrides apply to a spec file; this spec is compiled already")
    if init:  # checked when the spec compiles: compile_file(..., init=...) for a compiled one
        raise TypeError("init applies to a spec file; this spec is compiled already (compile it with init=...)")
    if isinstance(spec, LoadedSpec):
        return spec
    return LoadedSpec(spec, f"<{spec.spec.name}, compiled in Python>")


# ------------------------------------------------------------------ what fit reports


@dataclass(frozen=True)
class Note:
    """Something fit tells before training: ``kind`` "killed" (the run's last process was killed;
    now recorded as interrupted) or "afresh" (a run stopped before its first checkpoint starts again)."""

    kind: str
    text: str


@dataclass(frozen=True)
class Started:
    """Training begins: at ``step`` (0, or the checkpoint's when resumed) of ``total`` steps."""

    name: str
    run_dir: pathlib.Path
    step: int
    total: int
    resumed: bool


@dataclass
class FitResult:
    """How a fit ended. ``status`` is run.json's: "completed", "early_stopped" (train.early_stopping
    ended it; with ``already_ended`` it had before this fit, which did nothing), "diverged",
    "interrupted" or "failed". ``metrics``: the final evaluation (eval.split's metrics, or the episodes' returns of
    a gym source); ``train``: the last train row's losses and train metrics (window means over
    ``train_steps``), or the last iteration's losses when this fit logged no row; ``best``: run.json's record of best.npz;
    ``checkpoint``: the last checkpoint to continue from (None when there is none)."""

    status: str
    run_dir: pathlib.Path
    steps: int = 0
    total_steps: int = 0
    message: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    train: dict[str, float] = field(default_factory=dict)
    best: dict[str, Any] | None = None
    checkpoint: pathlib.Path | None = None
    error: BaseException | None = None
    # interrupted: where. "start-up" (nothing written); "cut" (a stop not asked for by should_stop,
    # e.g. a second Ctrl-C, may have cut an iteration: no checkpoint written); "final evaluation"
    # (the checkpoint holds every step); "abandoned" / "unsaved" (its checkpoint was abandoned /
    # could not be written); "saved"
    stopped: str | None = None
    started: bool = False  # run.json was written (a run to look at or continue)
    unrecorded: str | None = None  # why the ending could not be recorded in run.json
    stop_after_completion: bool = False  # a stop came while "completed" was written; it stays completed
    already_ended: bool = False  # resume=True on a run that had ended early_stopped: nothing was done
    episodes: tuple[int, str] | None = None  # a gym source's evaluation: episodes and policy
    # the steps ``train`` covers (first, last): the last train row's window; None: the last iteration's
    train_steps: tuple[int, int] | None = None
    eval_split: str | None = None
    notes: list[Note] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        from .run import SUCCEEDED

        return self.status in SUCCEEDED


@dataclass
class EvalResult:
    """A checkpoint's metrics under no_grad: on ``split``, or over ``episodes`` of ``policy``."""

    checkpoint: str
    metrics: dict[str, float]
    split: str | None = None
    episodes: int | None = None
    policy: str | None = None


class Scope(Protocol):
    """The signals noted while a guard held them back."""

    signals: int


class Guard(Protocol):
    """Holds signals back while a file is written (see cli/interrupts.py, whose Interrupts is one)."""

    def critical(
        self, abandon: bool = False, deliver: bool = True, say: bool = True
    ) -> AbstractContextManager[Scope]: ...

    def deferred(self) -> AbstractContextManager[Scope]: ...


@dataclass
class _Noted:
    signals: int = 0


class _NoGuard:
    """No signal is held back: a KeyboardInterrupt lands where it lands."""

    @contextlib.contextmanager
    def critical(self, abandon: bool = False, deliver: bool = True, say: bool = True) -> Iterator[Scope]:
        yield _Noted()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[Scope]:
        scope = _Noted()
        try:
            yield scope
        except KeyboardInterrupt:
            # as a second signal to the CLI: unless should_stop asked for it (_Fit._train checks),
            # it may have cut an iteration, whose state no checkpoint may hold
            scope.signals = 2
            raise


@dataclass
class Hooks:
    """fit's callbacks (see fit)."""

    on_start: Callable[[Started], None] | None = None
    on_progress: Callable[[int, dict[str, float]], None] | None = None
    on_log: Callable[[Record], None] | None = None
    on_eval: Callable[[int, dict[str, float]], None] | None = None
    on_note: Callable[[Note], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_eval_row: Callable[[Record], None] | None = None


def fit(
    spec: str | os.PathLike[str] | LoadedSpec | Compiled,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    force: bool = False,
    threads: int | None = None,
    max_memory: int | None = None,
    allow_outside: bool = False,
    init: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = (),
    on_start: Callable[[Started], None] | None = None,
    on_progress: Callable[[int, dict[str, float]], None] | None = None,
    on_log: Callable[[Record], None] | None = None,
    on_eval: Callable[[int, dict[str, float]], None] | None = None,
    on_note: Callable[[Note], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_eval_row: Callable[[Record], None] | None = None,
    guard: Guard | None = None,
    tensorboard: bool | None = None,
    mlflow: str | None = None,
) -> FitResult:
    """Train ``spec`` (a spec file, compiled with ``seed`` and ``key=value`` ``overrides``, or a
    compiled spec) into ``run_dir`` (default: runs/NAME, numbered when taken), locked for the whole
    run, as ``onlytorch train`` does: the same files, run.json statuses, metrics log, checkpoints
    and final evaluation. ``resume=True`` continues the run in ``run_dir`` from its last checkpoint
    (``force=True`` even when the spec changed). ``init``: a checkpoint (or several) to start every
    module of the same name from, as ``onlytorch train --init`` (one more ``init:`` entry without
    ``modules``; relative to the current directory; checked when the spec compiles); like the
    spec's own ``init:``, it is loaded when a run starts from step 0, never when it resumes from
    its checkpoint, and run.json's ``init`` records each file's path and sha256.
    Callbacks: ``on_start`` once training begins,
    ``on_progress(step, losses)`` after every iteration, ``on_log(record)`` for every logged row,
    ``on_eval(step, metrics)`` after every evaluation, ``on_eval_row(record)`` for every logged
    evaluation row (its keys as metrics.jsonl's: ``val/NAME``, ``eval/NAME``), ``on_note`` for what
    it notices before;
    ``should_stop()`` between iterations. Trackers (docs/runs.md): TensorBoard event files in
    RUN_DIR/tensorboard/ when tensorboardX is installed (``tensorboard=False`` or the spec's
    ``logging: {tensorboard: false}``: none); ``mlflow``: an MLflow tracking URI to log the run to
    (over the spec's ``logging.mlflow``). Raises FitError (InvalidSpec, Refused, RunDirUnusable,
    BadInput) for what it refuses before training; returns how the training ended."""
    from .threads import num_threads

    hooks = Hooks(on_start, on_progress, on_log, on_eval, on_note, should_stop, on_eval_row)
    with num_threads(threads) if threads is not None else contextlib.nullcontext():
        inits = [init] if isinstance(init, (str, os.PathLike)) else list(init)
        loaded = _loaded(spec, seed, overrides, allow_outside, max_memory, inits)
        from .tracking.wiring import Session, choose_trackers

        tracking = Session(choose_trackers(loaded.compiled, tensorboard, mlflow))
        return _Fit(loaded, hooks, guard or _NoGuard(), resume, force, tracking).run(run_dir)


def _eval_rows(hook: Callable[[Record], None]) -> Callable[[dict[str, Any]], None]:
    """A Run row listener that passes each evaluation row to ``hook`` as a Record."""

    from .metrics_log import Record

    def listener(row: dict[str, Any]) -> None:
        if row.get("kind") == "eval":
            hook(Record(row["step"], {k: v for k, v in row.items() if k not in ("step", "kind")}))

    return listener


def _trainer(compiled: Compiled) -> Trainer:
    """The trainer of a spec, its data loaded; BadInput for data that cannot be loaded."""
    from .data.sources import DataError
    from .train import Trainer

    try:
        return Trainer(compiled)
    except DataError as e:
        raise BadInput(f"data: {e}") from None


@contextlib.contextmanager
def _writing(name: pathlib.Path | str) -> Iterator[None]:
    """Name the file in an OSError from a write to an open file (the OS leaves it unnamed) or to
    a temporary file (whose name means nothing to the user)."""
    try:
        yield
    except OSError as e:
        if e.filename is None or str(e.filename).endswith(".tmp"):
            raise OSError(e.errno, e.strerror, str(name)) from None
        raise


class _Fit:
    """One fit: claim the run directory, apply the resume rules, train, evaluate, record the end."""

    def __init__(
        self, loaded: LoadedSpec, hooks: Hooks, guard: Guard, resume: bool, force: bool, tracking: Session | None = None
    ) -> None:
        from .tracking.hub import Trackers
        from .tracking.wiring import Session

        self.tracking = tracking if tracking is not None else Session(Trackers())
        self.c = loaded.compiled
        self.loaded = loaded
        self.hooks = hooks
        self.guard = guard
        self.resume = resume
        self.force = force
        self.notes: list[Note] = []
        self.stop_asked = False

    def note(self, kind: str, text: str) -> None:
        n = Note(kind, text)
        self.notes.append(n)
        if self.hooks.on_note is not None:
            self.hooks.on_note(n)

    def run(self, run_dir: str | os.PathLike[str] | None) -> FitResult:
        if self.c.spec.train is None:
            raise Refused(f"{self.loaded.spec_file} has no train section")
        # A signal while the directory is claimed waits for the claim (a lock taken but not yet
        # recorded would be left behind), then ends the fit here, releasing it.
        with self.guard.critical(deliver=False, say=False) as claiming:
            claim = claim_run_dir(self.c.spec.name, run_dir, self.resume)
        try:
            if claiming.signals:
                raise KeyboardInterrupt
            return self._locked(claim)
        finally:
            self.tracking.close()
            with self.guard.critical(deliver=False):
                claim.release()

    def _locked(self, claim: Claim) -> FitResult:
        """The resume rules of docs/runs.md, then the training."""
        path, resume = claim.path, self.resume
        # lexists: a last.npz that is a broken or looping link is a bad checkpoint (refused when read),
        # not a missing one (which would start the run afresh and drop its log)
        has_checkpoint = os.path.lexists(path / "checkpoints" / "last.npz")
        has_run = (path / "run.json").exists()
        previous = read_info(path) if has_run else None
        if previous is not None and previous.get("status") == "running":
            self.note("killed", record_killed(path, previous, claim.lock.stale_pid))
        if resume and previous is not None and previous.get("status") == "early_stopped":
            from .stopping import nothing_to_resume

            steps, message = nothing_to_resume(path, previous)
            total = previous.get("total_steps")
            return FitResult(
                "early_stopped",
                path,
                steps=steps,
                total_steps=total if isinstance(total, int) else steps,
                message=message,
                best=previous.get("best") if isinstance(previous.get("best"), dict) else None,
                already_ended=True,
                notes=self.notes,
            )
        if resume and not has_checkpoint and previous is not None and previous.get("status") == "completed":
            # a completed run always wrote its final checkpoint: it was lost, not never written
            raise Refused(
                f"--resume: {path / 'checkpoints' / 'last.npz'} is missing, but run.json says the run completed "
                f"{previous.get('steps_done', '?')} steps (the checkpoint was deleted or moved); put it back, "
                "or train into another --out"
            )
        if not resume and has_checkpoint:
            raise Refused(f"{path} already holds a run; continue it with --resume, or choose another --out")
        if not resume and has_run:
            raise Refused(
                f"{path} holds a run that stopped before its first checkpoint; start it again from step 0 "
                "with --resume, or choose another --out"
            )
        if resume and not has_checkpoint and not has_run:
            raise Refused(f"--resume: {path} holds no checkpoint to continue from (checkpoints/last.npz)")
        afresh = resume and not has_checkpoint  # the dead end: a run killed before its first checkpoint
        if afresh:
            self._refuse_changed_spec(path, str((previous or {}).get("spec_hash", "")), "run.json: 'spec_hash'")
            self.note("afresh", f"{path} holds no checkpoint (its run stopped before the first one): starting afresh")
        return self._train(path, resume and not afresh)

    def _refuse_changed_spec(self, path: pathlib.Path, saved: str, source: str) -> None:
        """SpecChanged when the spec differs from the run's and force is not given; ``source``
        names where the saved hash was read."""
        import json

        from .run import resolved_spec, spec_changes, spec_hash

        resolved = resolved_spec(self.c)
        if not saved or saved == spec_hash(resolved) or self.force:
            return
        try:
            old = json.loads((path / "spec.json").read_text(encoding="utf-8"))
            changes = spec_changes(old, resolved)
        except (OSError, ValueError):
            changes = ["(the run's spec.json is missing or unreadable)"]
        if not changes:
            # the run's spec.json is this spec: the checkpoint's own note says it was written for another
            changes = [
                f"{source} ({saved[:40]!r}) is not the hash of this spec, though the run's spec.json matches it "
                "(written for another spec, or edited)"
            ]
        raise SpecChanged(path, changes)

    def _train(self, path: pathlib.Path, resumed: bool) -> FitResult:
        from . import checkpoint as ckpt
        from .evaluation import RunEvaluation
        from .run import Run

        run: Run | None = None
        stage = "start-up"
        loop: Scope = _Noted()
        try:
            trainer = _trainer(self.c)
            run = Run(path, self.c, trainer, self.loaded.spec_file, self.loaded.overrides)
            evaluation = RunEvaluation(run, trainer)
            if resumed:
                try:
                    state = ckpt.load(run.last_checkpoint)
                except ckpt.CheckpointError as e:
                    raise BadInput(f"cannot resume: {e}") from None
                self._refuse_changed_spec(
                    path, str(state.get("meta/spec_hash", "")), f"{run.last_checkpoint}: entry 'meta/spec_hash'"
                )
                try:
                    trainer.restore(state)
                except ckpt.CheckpointError as e:
                    raise BadInput(str(e)) from None
                if (before := read_info(path)) is not None and before.get("init"):
                    run.info["init"] = before["init"]  # what the run was started from, not reloaded
            elif self.c.init:
                run.info["init"] = _load_init(self.c)
            try:
                with self.guard.critical():
                    run.start(resumed)
                    stage = "training"  # from here on run.json says running: every ending records another status
            except OSError as e:
                from .rundir import target_of_temporary

                where = target_of_temporary(str(e.filename)) if e.filename else f"the run directory {path}"
                return FitResult("failed", path, message=f"cannot write {where}: {e.strerror or e}", error=e)
            self.tracking.start(run, resumed)
            total = trainer.total_steps()
            if self.hooks.on_start is not None:
                self.hooks.on_start(Started(self.c.spec.name, path, trainer.step, total, resumed))
            evaluates = self.c.spec.eval is not None or trainer.live is not None
            with self.guard.deferred() as loop:
                self._loop(run, trainer, evaluation, total, evaluates)
            stage = "finishing"
            with self.guard.critical():
                run.checkpoint()
            if evaluates and not evaluation.evaluated_at(trainer.step):
                final_eval = evaluation.evaluate(trainer.step)
                self.tracking.after_evaluation(trainer.step)
                if self.hooks.on_eval is not None:
                    self.hooks.on_eval(trainer.step, final_eval)
            else:
                final_eval = evaluation.last()
            status, message = "completed", None
            if trainer.stopping.has_stopped:
                status, message = "early_stopped", trainer.stopping.describe()
                run.info["early_stopping"] = trainer.stopping.record()
            with self.guard.critical(deliver=False) as done:
                run.finish(status, message)
        except KeyboardInterrupt:
            # without a guard, only a stop asked by should_stop is known to land between iterations
            forced = loop.signals > 1 and not (isinstance(self.guard, _NoGuard) and self.stop_asked)
            return self._interrupted(run, path, stage, forced)
        except FitError:
            raise  # refused before the run started: nothing recorded
        except Exception as e:  # MemoryError, OSError and a bug's exception too: recorded, never a traceback
            return self._failed(run if stage != "start-up" else None, e, path)
        return self._result(run, status, metrics=final_eval, stop_after_completion=done.signals > 0)

    def _loop(self, run: Run, trainer: Trainer, evaluation: RunEvaluation, total: int, evaluates: bool) -> None:
        from .train import train_loop

        hooks = self.hooks
        if hooks.on_eval_row is not None:
            # registered for the run's rest: the final evaluation after the loop is logged too
            run.row_listeners.append(_eval_rows(hooks.on_eval_row))

        def on_log(rec: Record) -> None:
            with _writing(f"{run.path / 'metrics.jsonl'} (or metrics.csv)"):
                run.log("train", rec)
            with _writing(run.path / "run.json"):
                run.write_info()
            if hooks.on_log is not None:
                hooks.on_log(rec)

        def on_eval(rec: Record) -> None:
            values = evaluation.evaluate(rec.step)
            self.tracking.after_evaluation(rec.step)
            if hooks.on_eval is not None:
                hooks.on_eval(rec.step, values)

        def on_checkpoint() -> None:
            run.checkpoint()

        def should_stop() -> bool:
            if hooks.should_stop is not None and hooks.should_stop():
                self.stop_asked = True
            return self.stop_asked

        train_loop(
            trainer,
            total,
            on_log,
            on_eval if evaluates else None,
            on_checkpoint,
            hooks.on_progress,
            should_stop=should_stop,
        )

    def _result(self, run: Run, status: str, **kwargs: Any) -> FitResult:
        """The result of a run that started, read from the run and its trainer."""
        trainer: Any = run.trainer
        last = run.last_checkpoint
        live = trainer.live is not None
        kwargs.setdefault("checkpoint", last if last.exists() else None)
        kwargs.setdefault("message", run.info.get("message"))
        self.tracking.end(status, run.info)  # every ending of a started run comes here, once recorded
        return FitResult(
            status,
            run.path,
            steps=trainer.step,
            total_steps=trainer.total_steps(),
            # the last train row's losses and train metrics (window means), else the last iteration's losses
            train=dict(trainer.last_row[2] if trainer.last_row else trainer.last),
            train_steps=trainer.last_row[:2] if trainer.last_row else None,
            best=run.info.get("best"),
            started=True,
            episodes=trainer.episode_settings() if live else None,
            eval_split=(self.c.spec.eval.split if self.c.spec.eval else "test") if not live else None,
            notes=self.notes,
            **kwargs,
        )

    def _record(self, run: Run | None, status: str, message: str | None) -> str | None:
        """Record the run's final status; why it could not be, when even that cannot be written."""
        if run is None:
            return None
        with self.guard.critical(deliver=False):
            try:
                run.finish(status, message)
            except OSError as e:
                return (
                    f"the run's end ({status}) could not be recorded in {run.path / 'run.json'}: "
                    f"{e.strerror or e}; it still says 'running' (the next command that opens the run "
                    "will find it stopped)"
                )
        return None

    def _interrupted(self, run: Run | None, path: pathlib.Path, stage: str, forced: bool) -> FitResult:
        """Every interruption ends here: run.json ``interrupted`` once the run has started."""
        from . import checkpoint as ckpt

        if run is None or stage == "start-up":
            return FitResult("interrupted", path, stopped="start-up", notes=self.notes)
        step = run.trainer.step
        last = run.last_checkpoint
        if forced:
            # A second signal stopped an iteration (or the logging, evaluation or checkpoint after it)
            # halfway: its state is not one to continue from.
            unrecorded = self._record(run, "interrupted", f"interrupted twice after step {step}; no checkpoint written")
            return self._result(run, "interrupted", stopped="cut", unrecorded=unrecorded)
        if stage == "finishing":
            # the final checkpoint holds every step; what was cut is the final evaluation
            message = f"interrupted after the last step ({step}), during the final evaluation"
            unrecorded = self._record(run, "interrupted", message)
            return self._result(run, "interrupted", stopped="final evaluation", unrecorded=unrecorded, checkpoint=last)
        try:
            with self.guard.critical(abandon=True, deliver=False):
                run.checkpoint()
        except KeyboardInterrupt:
            unrecorded = self._record(run, "interrupted", f"interrupted at step {step}; its checkpoint was abandoned")
            return self._result(run, "interrupted", stopped="abandoned", unrecorded=unrecorded)
        except (ckpt.CheckpointError, OSError) as e:
            message = f"interrupted at step {step}; the checkpoint could not be written: {e}"
            unrecorded = self._record(run, "interrupted", message)
            return self._result(run, "interrupted", stopped="unsaved", unrecorded=unrecorded, error=e)
        unrecorded = self._record(run, "interrupted", f"interrupted at step {step}")
        return self._result(run, "interrupted", stopped="saved", unrecorded=unrecorded, checkpoint=last)

    def _failed(self, run: Run | None, e: BaseException, path: pathlib.Path) -> FitResult:
        """A run that cannot go on: run.json ``failed`` (``diverged``) with the message."""
        from . import checkpoint as ckpt
        from .data.sources import DataError
        from .errors import GraphError
        from .rundir import NO_SPACE, target_of_temporary
        from .train import Diverged

        if isinstance(e, Diverged):
            status, message = "diverged", str(e)
        elif isinstance(e, OSError) and e.errno in NO_SPACE:
            where = (
                f" {target_of_temporary(str(e.filename))}"
                if e.filename
                else (f" in {run.path}" if run is not None else "")
            )
            status, message = (
                "failed",
                f"cannot write{where}: {e.strerror} (free some space, then continue with --resume)",
            )
        else:
            status, message = "failed", failure_message(e, (ckpt.CheckpointError, GraphError, DataError))
        unrecorded = self._record(run, status, message)
        if run is None:
            return FitResult(status, path, message=message, error=e, notes=self.notes)
        return self._result(run, status, message=message, error=e, unrecorded=unrecorded)


def failure_message(e: BaseException, expected: tuple[type[BaseException], ...] = ()) -> str:
    """What is said of an exception that ends a command or a run: the message of an ``expected``
    kind (the engine's own errors), a plain sentence for memory and file-system errors, and
    "internal error" for anything else (a bug: still one line, never a traceback)."""
    from .rundir import target_of_temporary

    if isinstance(e, MemoryError):
        return (
            f"out of memory{f' ({e})' if str(e) else ''}: the model, batch or data do not fit in this machine's memory"
        )
    if isinstance(e, OSError):
        name = target_of_temporary(str(e.filename)) if e.filename else None
        if name and e.errno == errno.ELOOP:
            return f"{name}: a symbolic link, which onlytorch never writes through (replace it with a file)"
        return f"{name}: {e.strerror}" if name and e.strerror else str(e.strerror or e)
    if isinstance(e, expected):
        return str(e)
    return f"internal error: {type(e).__name__}: {e} (a bug in onlytorch; please report it)"


def evaluate_checkpoint(
    spec: str | os.PathLike[str] | LoadedSpec | Compiled,
    checkpoint: str | os.PathLike[str],
    *,
    split: str | None = None,
    episodes: int | None = None,
    policy: str | None = None,
    overrides: Sequence[str] = (),
    threads: int | None = None,
    allow_outside: bool = False,
) -> EvalResult:
    """The metrics of a checkpoint of ``spec`` under no_grad (eval mode), as ``onlytorch eval``
    computes them: on ``split`` (default: the spec's eval split), or for a gym source over whole
    ``episodes`` of its ``policy`` ("greedy" or "sampled"). Raises Refused for what the spec does
    not have, BadInput for data or a checkpoint that cannot be used."""
    from .evaluation import evaluate
    from .threads import num_threads

    with num_threads(threads) if threads is not None else contextlib.nullcontext():
        compiled = _loaded(spec, None, overrides, allow_outside, None).compiled
        where = os.fspath(checkpoint)
        trainer = _trainer(compiled)
        if trainer.live is not None:
            if split is not None:
                raise Refused("a spec with a gym training source is evaluated in episodes; --split does not apply")
            _restore_weights(trainer, where)
            n, used_policy = trainer.episode_settings(episodes, policy)
            return EvalResult(where, trainer.episodes(n, used_policy), episodes=n, policy=used_policy)
        if episodes is not None or policy is not None:
            raise Refused("--episodes and --policy apply to specs with a gym training source")
        if compiled.spec.eval is None and split is None:
            raise Refused("the spec has no eval section; give --split")
        used = split or (compiled.spec.eval.split if compiled.spec.eval else "test")
        if trainer.fields and used not in trainer.data:
            have = ", ".join(sorted(trainer.data)) or "none"
            raise Refused(f"the spec has no {used!r} split to evaluate (its splits: {have})")
        _refuse_missing_fields(compiled, trainer, used)
        _restore_weights(trainer, where)
        values = trainer.evaluate(used) if compiled.spec.eval is None else evaluate(compiled, trainer, None, used)
        return EvalResult(where, values, split=used)


def _refuse_missing_fields(compiled: Compiled, trainer: Trainer, split: str) -> None:
    """The compiler checks eval.split's fields (check_evaluated_fields); a --split chosen at eval
    time is held to the same rule here."""
    from .compiler.bind import lacking_fields, missing_fields

    fields = list(trainer.data.get(split, {}))
    missing = missing_fields(compiled.spec, fields)
    if missing:
        raise Refused(f"cannot evaluate {lacking_fields(split, missing, fields)}; choose a split that has them")


def _load_init(compiled: Compiled) -> list[dict[str, Any]]:
    """The spec's modules set from their init checkpoints (initfrom.py); BadInput when one cannot be used."""
    from . import checkpoint as ckpt
    from .initfrom import load_init

    try:
        return load_init(compiled)
    except ckpt.CheckpointError as e:
        raise BadInput(f"init: {e}") from None


def _restore_weights(trainer: Trainer, checkpoint: str) -> None:
    from . import checkpoint as ckpt

    try:
        trainer.restore_weights(ckpt.load(checkpoint))
    except ckpt.CheckpointError as e:
        raise BadInput(str(e)) from None
