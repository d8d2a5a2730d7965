"""The bodies of ``onlytorch train`` and ``onlytorch eval``: they call onlytorch.fit and
onlytorch.evaluate_checkpoint (onlytorch/app.py) and turn what those report into the command's
output (progress, tables, messages) and exit code."""

from __future__ import annotations

import contextlib
import json
import pathlib
import shlex
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from onlytorch.app import failure_message
from onlytorch.runclaim import Claim, Refused, RunDirUnusable, RunNameUnusable, claim_run_dir

from . import interrupts
from .paths import describe_os_error, shorten
from .progress import Progress

if TYPE_CHECKING:
    from onlytorch.app import FitResult, LoadedSpec, Note, Started
    from onlytorch.compile import Compiled

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "failure_message", "run_eval", "run_training"]


class _RunDirError(click.ClickException):
    """The run directory cannot be made or locked for a reason of the machine (exit 1)."""

    exit_code = EXIT_FAILED


def _dir_error(path: pathlib.Path, e: OSError) -> click.ClickException:
    message, path_at_fault = describe_os_error(path, e)
    if path_at_fault:
        return click.UsageError(f"cannot use {message}")
    return _RunDirError(f"cannot write the run directory {message}")


@contextlib.contextmanager
def _as_usage_errors() -> Iterator[None]:
    """The run directory's refusals as the command's usage errors (exit 2; 1 for the machine's)."""
    try:
        yield
    except RunNameUnusable as e:
        raise click.UsageError(
            f"the spec's name {shorten(e.name)!r} cannot name a folder under runs/; give --out RUN_DIR"
        ) from None
    except Refused as e:
        raise click.UsageError(str(e)) from None
    except RunDirUnusable as e:
        raise _dir_error(e.path, e.error) from None


def _claim_run_dir(compiled: Compiled, out: str | None, resume: bool) -> Claim:
    """The run directory ``onlytorch train`` would claim for this spec, locked (see onlytorch/runclaim.py)."""
    with _as_usage_errors():
        return claim_run_dir(compiled.spec.name, out, resume)


def _table(title: str, values: dict[str, float]) -> str:
    if not values:
        return ""
    width = max(len(k) for k in values)
    lines = [title, "-" * max(len(title), width + 14)]
    lines += [f"{k:<{width}}  {v:>12.6g}" for k, v in values.items()]
    return "\n".join(lines)


class _Shown:
    """What the command shows while fit runs: its notes, the start line and the progress."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress: Progress | None = None

    def note(self, note: Note) -> None:
        # a killed run's record is said even with --quiet: it changes run.json
        if note.kind == "killed" or not self.quiet:
            click.echo(note.text, err=True)

    def start(self, started: Started) -> None:
        if not self.quiet:
            what = f"resuming at step {started.step}" if started.resumed else "training"
            click.echo(f"{started.name}: {what}, {started.total} steps -> {started.run_dir}", err=True)
        self.progress = Progress(started.total, self.quiet, started.step)

    def update(self, step: int, values: dict[str, float]) -> None:
        if self.progress is not None:
            self.progress.update(step, values)

    def log(self, record: Any) -> None:
        if self.progress is not None:
            self.progress.log(record.step, record.values)

    def evaluation(self, record: Any) -> None:
        if self.progress is not None:
            self.progress.evaluation(record.step, record.values)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()


def run_training(
    loaded: LoadedSpec,
    out: str | None,
    resume: bool,
    force: bool,
    quiet: bool,
    *,
    tensorboard: bool | None = None,
    mlflow: str | None = None,
    report: bool = False,
) -> int:
    """Train into a run directory held locked for the whole run (see docs/runs.md); ``tensorboard``
    and ``mlflow`` as onlytorch.fit's; ``report``: then write the run's report (see _report)."""
    code, result = _train(loaded, out, resume, force, quiet, tensorboard, mlflow)
    return _report(result, code) if report and result is not None else code


def _report(result: FitResult, code: int) -> int:
    """``train --report``: the run's report into RUN_DIR/report/, as ``onlytorch report RUN_DIR``
    writes it, for a run that ended (also early-stopped) and for a diverged or failed run that
    logged rows; an interrupted run gets none. A report that cannot be written fails the command."""
    from onlytorch import report

    from .report_cmd import report_run

    if code == EXIT_INTERRUPTED or not (result.ok or result.started):
        return code
    try:
        if not result.ok and not report.read_run(result.run_dir).rows:
            click.echo(f"no report: {result.run_dir} logged no rows before it ended", err=True)
            return code
        click.echo(f"\nreport of {result.run_dir}:")
        report_run(result.run_dir)
    except (click.ClickException, report.ReportError, OSError) as e:
        why = e.format_message() if isinstance(e, click.ClickException) else str(e)
        click.echo(f"error: the report of {result.run_dir} could not be written: {why}", err=True)
        return EXIT_FAILED if code == EXIT_OK else code
    return code


def _train(
    loaded: LoadedSpec,
    out: str | None,
    resume: bool,
    force: bool,
    quiet: bool,
    tensorboard: bool | None,
    mlflow: str | None,
) -> tuple[int, FitResult | None]:
    """run_training without the report: the exit code and how the fit ended (None: it never started)."""
    from onlytorch.app import BadInput, fit

    its = interrupts.current()
    shown = _Shown(quiet)
    try:
        with _as_usage_errors():
            result = fit(
                loaded,
                out,
                resume=resume,
                force=force,
                on_start=shown.start,
                on_progress=shown.update,
                on_log=shown.log,
                on_eval_row=shown.evaluation,
                on_note=shown.note,
                should_stop=its.stop_requested,
                guard=its,
                tensorboard=tensorboard,
                mlflow=mlflow,
            )
    except BadInput as e:
        click.echo(f"error: {e}", err=True)
        if e.hint:
            click.echo(e.hint, err=True)
        return EXIT_USAGE, None
    finally:
        shown.close()  # the bar's line ends before anything else is said
    return _ended(result, loaded, shown), result


def _ended(result: FitResult, loaded: LoadedSpec, shown: _Shown) -> int:
    """What the command says about how the fit ended, and its exit code."""
    if result.already_ended:  # --resume of an early-stopped run: said, nothing done
        click.echo(result.message, err=True)
        return EXIT_OK
    if result.ok:  # completed, or early_stopped
        if shown.progress is not None:
            shown.progress.close()
        _summary(result)
        if result.stop_after_completion:
            click.echo(f"interrupted after the run ended (its status stays {result.status})", err=True)
            return EXIT_INTERRUPTED
        return EXIT_OK
    if result.status == "interrupted":
        return _interrupted(result, loaded)
    if result.unrecorded:
        click.echo(f"error: {result.unrecorded}", err=True)
    click.echo(f"error: {result.message}", err=True)
    if result.status == "diverged":
        if result.started:
            click.echo(
                f"the last good checkpoint is {result.checkpoint}"
                if result.checkpoint is not None
                else "no checkpoint was written before the divergence",
                err=True,
            )
        return EXIT_DIVERGED
    if result.checkpoint is not None:
        click.echo(f"the last good checkpoint is {result.checkpoint}", err=True)
    return EXIT_FAILED


def _interrupted(result: FitResult, loaded: LoadedSpec) -> int:
    """Exit 130 with what was kept and the command that continues the run."""
    path, step, last = result.run_dir, result.steps, result.checkpoint
    click.echo("", err=True)
    if result.stopped == "start-up":
        click.echo(f"interrupted during start-up, before training began; nothing written in {path}", err=True)
        return EXIT_INTERRUPTED
    if result.unrecorded:
        click.echo(f"error: {result.unrecorded}", err=True)
    sets = " ".join(
        [*(f"--set {shlex.quote(o)}" for o in loaded.overrides), *(f"--init {shlex.quote(p)}" for p in loaded.init)]
    )
    again = f"onlytorch train {shlex.quote(loaded.spec_file)} --out {shlex.quote(str(path))} --resume {sets}".rstrip()
    if result.stopped == "cut":
        where = f"continue from the last checkpoint ({last}) with: {again}" if last is not None else "no checkpoint"
        message = f"interrupted twice after step {step}: stopped without writing a checkpoint; {where}"
    elif result.stopped == "final evaluation":
        message = f"{result.message}; checkpoint {last}; finish it with: {again}"
    elif result.stopped == "abandoned":
        kept = f"the last checkpoint is {last}" if last is not None else "no checkpoint"
        message = f"interrupted at step {step}; the checkpoint was abandoned ({kept}); continue with: {again}"
    elif result.stopped == "unsaved":
        message = f"interrupted at step {step}; the checkpoint could not be written: {result.error}"
    else:
        message = f"interrupted at step {step}; checkpoint {last}; continue with: {again}"
    click.echo(message, err=True)
    return EXIT_INTERRUPTED


def _final_title(result: FitResult) -> str:
    """The final table's title: the step of the last train row it shows, and the steps that row's
    window means average (``final training losses (step 400), mean of steps 351-400``)."""
    if result.train_steps is None:
        return f"final training losses (step {result.steps})"
    first, last = result.train_steps
    return f"final training losses (step {last})" + (f", mean of steps {first}-{last}" if first < last else "")


def _summary(result: FitResult) -> None:
    click.echo(_table(_final_title(result), result.train))
    if result.metrics and result.episodes is not None:
        n, policy = result.episodes
        click.echo(_table(f"evaluation: {n} episodes, {policy} policy (no_grad)", result.metrics))
    elif result.metrics:
        click.echo(_table(f"evaluation on {result.eval_split} (no_grad)", result.metrics))
    if result.status == "early_stopped" and result.message:
        best = result.best.get("step") if result.best else None
        click.echo(result.message + (f"; best.npz holds step {best}" if best is not None else ""))
    path = result.run_dir
    click.echo(f"run directory: {path}  (onlytorch report {path})")


def run_eval(
    loaded: LoadedSpec,
    checkpoint: str,
    split: str | None,
    as_json: bool,
    episodes: int | None = None,
    policy: str | None = None,
) -> int:
    from onlytorch.app import BadInput, evaluate_checkpoint

    try:
        with _as_usage_errors():
            result = evaluate_checkpoint(loaded, checkpoint, split=split, episodes=episodes, policy=policy)
    except BadInput as e:
        click.echo(f"error: {e}", err=True)
        return EXIT_USAGE
    if result.episodes is not None:
        if as_json:
            out = {"episodes": result.episodes, "policy": result.policy, "checkpoint": checkpoint}
            click.echo(json.dumps({**out, "metrics": result.metrics}, indent=2))
        else:
            title = f"{result.episodes} episodes of {checkpoint} ({result.policy} policy, no_grad)"
            click.echo(_table(title, result.metrics))
    elif as_json:
        click.echo(json.dumps({"split": result.split, "checkpoint": checkpoint, "metrics": result.metrics}, indent=2))
    else:
        click.echo(_table(f"evaluation of {checkpoint} on {result.split} (no_grad)", result.metrics))
    return EXIT_OK
