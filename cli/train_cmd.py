"""The bodies of ``onlytorch train`` and ``onlytorch eval``: run directories, progress, exit codes."""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import pathlib
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click

from onlytorch.compile import Compiled
from onlytorch.rundir import RunLock, RunLocked, killed_message, target_of_temporary, write_text_atomic

from . import interrupts
from .paths import describe_os_error, shorten

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@dataclass
class _Claim:
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


class _RunDirError(click.ClickException):
    """The run directory cannot be made or locked for a reason of the machine (exit 1)."""

    exit_code = EXIT_FAILED


def _dir_error(path: pathlib.Path, e: OSError) -> click.ClickException:
    message, path_at_fault = describe_os_error(path, e)
    if path_at_fault:
        return click.UsageError(f"cannot use {message}")
    return _RunDirError(f"cannot write the run directory {message}")


def _lock(path: pathlib.Path, created: bool = False) -> RunLock:
    try:
        return RunLock(path).acquire()
    except (RunLocked, OSError) as e:
        if created:  # made for this run and left empty: not left behind
            with contextlib.suppress(OSError):
                path.rmdir()
        if isinstance(e, RunLocked):
            raise click.UsageError(str(e)) from None
        raise _dir_error(pathlib.Path(e.filename) if e.filename else path, e) from None


def _claim_run_dir(compiled: Compiled, out: str | None, resume: bool) -> _Claim:
    """The run directory, locked. Fresh runs without --out get runs/NAME, or runs/NAME-2, -3, ...:
    a number is taken by creating its folder (mkdir fails if another process created it first),
    so two runs started at once never share a directory."""
    if out is not None:
        path = pathlib.Path(out)
        created = False
        if resume:
            if not path.is_dir():
                raise click.UsageError(f"--resume: {path} holds no checkpoint to continue from (checkpoints/last.npz)")
        else:
            try:
                created = not path.is_dir()
                path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise _dir_error(path, e) from None
        return _Claim(path, _lock(path, created), created)
    if resume:
        raise click.UsageError("--resume needs --out RUN_DIR: the run to continue")
    name = compiled.spec.name
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        raise click.UsageError(
            f"the spec's name {shorten(name)!r} cannot name a folder under runs/; give --out RUN_DIR"
        )
    runs = pathlib.Path("runs")
    try:
        runs.mkdir(exist_ok=True)
    except OSError as e:
        raise _dir_error(runs, e) from None
    for i in itertools.count(1):
        path = runs / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise _dir_error(path, e) from None
        try:
            return _Claim(path, RunLock(path).acquire(), True)
        except RunLocked:
            continue  # another process, told --out runs/NAME-i, locked it in between: not ours
        except OSError as e:
            with contextlib.suppress(OSError):
                path.rmdir()
            raise _dir_error(pathlib.Path(e.filename) if e.filename else path, e) from None
    raise AssertionError("unreachable")


def _read_info(path: pathlib.Path) -> dict[str, Any] | None:
    try:
        info = json.loads((path / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _record_killed(path: pathlib.Path, info: dict[str, Any], stale_pid: int | None) -> str:
    """run.json says ``running`` but this process holds the lock: the process that wrote it ended
    without recording how (SIGKILL, the OOM killer, a power cut). Record it as interrupted."""
    message = killed_message(info, stale_pid)
    info = {**info, "status": "interrupted", "message": message}
    try:
        write_text_atomic(path / "run.json", json.dumps(info, indent=2))
    except OSError as e:
        return f"note: {path}: {message} (run.json could not be updated: {e.strerror or e})"
    return f"note: {path}: {message}; recorded as interrupted"


class Progress:
    """One status line on a terminal (redrawn at most 10 times a second); log lines otherwise."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.tty = sys.stderr.isatty() and not quiet
        self.quiet = quiet
        self.last = 0.0
        self.t0 = time.perf_counter()
        self.start_step: int | None = None
        self.logged: tuple[int, float] | None = None  # the step and time of the last log line

    def update(self, step: int, values: dict[str, float]) -> None:
        if not self.tty:
            return
        now = time.perf_counter()
        if now - self.last < 0.1 and step != self.total:
            return
        self.last = now
        if self.start_step is None:
            self.start_step = step - 1
        width = 24
        done = int(width * step / max(self.total, 1))
        rate = (step - self.start_step) / max(now - self.t0, 1e-9)
        losses = "  ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in values.items())
        click.echo(
            f"\r[{'#' * done}{'.' * (width - done)}] {step}/{self.total}  {losses}  {rate:.0f} it/s\033[K",
            nl=False,
            err=True,
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.quiet or self.tty:
            return
        shown = "  ".join(
            f"{k} {v:.4g}" for k, v in values.items() if "/" in k and not k.startswith(("lr/", "grad_norm/"))
        )
        # iterations per second since the previous log line, so that a slowdown shows
        now = time.perf_counter()
        rate = f"  {(step - self.logged[0]) / max(now - self.logged[1], 1e-9):.0f} it/s" if self.logged else ""
        self.logged = (step, now)
        click.echo(f"step {step}/{self.total}  {shown}{rate}", err=True)

    def close(self) -> None:
        if self.tty:
            click.echo("", err=True)


def _table(title: str, values: dict[str, float]) -> str:
    if not values:
        return ""
    width = max(len(k) for k in values)
    lines = [title, "-" * max(len(title), width + 14)]
    lines += [f"{k:<{width}}  {v:>12.6g}" for k, v in values.items()]
    return "\n".join(lines)


def run_training(
    compiled: Compiled, spec_file: str, out: str | None, overrides: list[str], resume: bool, force: bool, quiet: bool
) -> int:
    """Train into a run directory held locked for the whole run (see docs/runs.md)."""
    if compiled.spec.train is None:
        raise click.UsageError(f"{spec_file} has no train section")
    # A signal while the directory is claimed waits for the claim (a lock taken but not yet
    # recorded would be left behind), then ends the command here, releasing it.
    with interrupts.current().critical(deliver=False, say=False) as claiming:
        claim = _claim_run_dir(compiled, out, resume)
    try:
        if claiming.signals:
            raise KeyboardInterrupt
        return _train_locked(claim, compiled, spec_file, overrides, resume, force, quiet)
    finally:
        with interrupts.current().critical(deliver=False):
            claim.release()


def _train_locked(
    claim: _Claim, compiled: Compiled, spec_file: str, overrides: list[str], resume: bool, force: bool, quiet: bool
) -> int:
    from onlytorch import checkpoint as ckpt
    from onlytorch.data.sources import DataError
    from onlytorch.errors import GraphError
    from onlytorch.run import Run, spec_changes, spec_hash

    path = claim.path
    # lexists: a last.npz that is a broken or looping link is a bad checkpoint (refused when read),
    # not a missing one (which would start the run afresh and drop its log)
    has_checkpoint = os.path.lexists(path / "checkpoints" / "last.npz")
    has_run = (path / "run.json").exists()
    previous = _read_info(path) if has_run else None
    if previous is not None and previous.get("status") == "running":
        click.echo(_record_killed(path, previous, claim.lock.stale_pid), err=True)
    if resume and not has_checkpoint and previous is not None and previous.get("status") == "completed":
        # a completed run always wrote its final checkpoint: it was lost, not never written
        raise click.UsageError(
            f"--resume: {path / 'checkpoints' / 'last.npz'} is missing, but run.json says the run completed "
            f"{previous.get('steps_done', '?')} steps (the checkpoint was deleted or moved); put it back, "
            "or train into another --out"
        )
    if not resume and has_checkpoint:
        raise click.UsageError(f"{path} already holds a run; continue it with --resume, or choose another --out")
    if not resume and has_run:
        raise click.UsageError(
            f"{path} holds a run that stopped before its first checkpoint; start it again from step 0 "
            "with --resume, or choose another --out"
        )
    if resume and not has_checkpoint and not has_run:
        raise click.UsageError(f"--resume: {path} holds no checkpoint to continue from (checkpoints/last.npz)")
    afresh = resume and not has_checkpoint  # the dead end: a run killed before its first checkpoint
    if afresh:
        saved = str((previous or {}).get("spec_hash", ""))
        refused = _refuse_changed_spec(path, saved, compiled, spec_changes, spec_hash, force, "run.json: 'spec_hash'")
        if refused is not None:
            return refused
        if not quiet:
            click.echo(f"{path} holds no checkpoint (its run stopped before the first one): starting afresh", err=True)

    its = interrupts.current()
    run: Run | None = None
    stage = "start-up"
    loop = interrupts.Scope()
    try:
        trainer = _trainer(compiled)
        if trainer is None:
            return EXIT_USAGE  # data that validation could not judge (damaged past its headers): bad input
        run = Run(path, compiled, trainer, spec_file, overrides)
        if resume and not afresh:
            try:
                state = ckpt.load(run.last_checkpoint)
            except ckpt.CheckpointError as e:
                click.echo(f"error: cannot resume: {e}", err=True)
                return EXIT_USAGE
            refused = _refuse_changed_spec(
                path,
                str(state.get("meta/spec_hash", "")),
                compiled,
                spec_changes,
                spec_hash,
                force,
                f"{run.last_checkpoint}: entry 'meta/spec_hash'",
            )
            if refused is not None:
                return refused
            try:
                trainer.restore(state)
            except ckpt.CheckpointError as e:
                click.echo(f"error: {e}", err=True)
                return EXIT_USAGE
        try:
            with its.critical():
                run.start(resume and not afresh)
                stage = "training"  # from here on run.json says running: every ending records another status
        except OSError as e:
            where = target_of_temporary(str(e.filename)) if e.filename else f"the run directory {path}"
            click.echo(f"error: cannot write {where}: {e.strerror or e}", err=True)
            return EXIT_FAILED
        total = trainer.total_steps()
        if not quiet:
            what = f"resuming at step {trainer.step}" if resume and not afresh else "training"
            click.echo(f"{compiled.spec.name}: {what}, {total} steps -> {path}", err=True)
        progress = Progress(total, quiet)
        evaluates = compiled.spec.eval is not None or trainer.live is not None
        run_loop = _loop(run, progress, evaluates)
        with its.deferred() as loop:
            run_loop(trainer, total, its.stop_requested)
        progress.close()
        stage = "finishing"
        with its.critical():
            run.checkpoint()
        evaluated = any(r.get("kind") == "eval" and r.get("step") == trainer.step for r in run.rows)
        final_eval = run.evaluate(trainer.step) if evaluates and not evaluated else _last_eval(run)
        with its.critical(deliver=False) as done:
            run.finish("completed")
    except KeyboardInterrupt:
        return _interrupted(run, path, stage, loop.signals > 1, spec_file, overrides)
    except click.ClickException as e:  # a usage error found late: still no run left "running"
        _record(run if stage != "start-up" else None, "failed", e.format_message())
        raise
    except Exception as e:  # MemoryError, OSError and a bug's exception too: recorded, never a traceback
        return _failed(run if stage != "start-up" else None, e, (ckpt.CheckpointError, GraphError, DataError))
    _summary(compiled, run, final_eval, path)
    if done.signals:
        click.echo("interrupted after the run completed (its status stays completed)", err=True)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _trainer(compiled: Compiled) -> Any:
    from onlytorch.data.sources import DataError
    from onlytorch.train import Trainer

    try:
        return Trainer(compiled)
    except DataError as e:
        click.echo(f"error: data: {e}", err=True)
        return None


def _refuse_changed_spec(
    path: pathlib.Path, saved: str, compiled: Compiled, spec_changes: Any, spec_hash: Any, force: bool, source: str
) -> int | None:
    """EXIT_USAGE (having said why) when the spec differs from the run's and --force is not given;
    ``source`` names where the saved hash was read."""
    from onlytorch.run import resolved_spec

    resolved = resolved_spec(compiled)
    if not saved or saved == spec_hash(resolved) or force:
        return None
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
    click.echo(f"error: the spec changed since {path} was written:\n  " + "\n  ".join(changes), err=True)
    click.echo("resume with --force to continue anyway", err=True)
    return EXIT_USAGE


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


def _loop(run: Any, progress: Progress, evaluates: bool) -> Any:
    from onlytorch.train import Record, train_loop

    def on_log(rec: Record) -> None:
        with _writing(f"{run.path / 'metrics.jsonl'} (or metrics.csv)"):
            run.log("train", rec)
        with _writing(run.path / "run.json"):
            run.write_info()
        progress.log(rec.step, rec.values)

    def on_eval(rec: Record) -> None:
        run.evaluate(rec.step)

    def on_checkpoint() -> None:
        run.checkpoint()

    def go(trainer: Any, total: int, should_stop: Any) -> None:
        train_loop(
            trainer,
            total,
            on_log,
            on_eval if evaluates else None,
            on_checkpoint,
            progress.update,
            should_stop=should_stop,
        )

    return go


def _record(run: Any, status: str, message: str | None) -> None:
    """Record the run's final status; say so plainly when even that cannot be written."""
    if run is None:
        return
    with interrupts.current().critical(deliver=False):
        try:
            run.finish(status, message)
        except OSError as e:
            click.echo(
                f"error: the run's end ({status}) could not be recorded in {run.path / 'run.json'}: "
                f"{e.strerror or e}; it still says 'running' (the next command that opens the run "
                "will find it stopped)",
                err=True,
            )


def _interrupted(run: Any, path: pathlib.Path, stage: str, forced: bool, spec_file: str, overrides: list[str]) -> int:
    """Every interruption ends here: exit 130, run.json ``interrupted`` once the run has started."""
    from onlytorch import checkpoint as ckpt

    click.echo("", err=True)
    if run is None or stage == "start-up":
        click.echo(f"interrupted during start-up, before training began; nothing written in {path}", err=True)
        return EXIT_INTERRUPTED
    sets = " ".join(f"--set {shlex.quote(o)}" for o in overrides)
    again = f"onlytorch train {shlex.quote(spec_file)} --out {shlex.quote(str(path))} --resume {sets}".rstrip()
    step = run.trainer.step
    last = run.last_checkpoint
    if forced:
        # A second signal stopped an iteration (or the logging, evaluation or checkpoint after it)
        # halfway: its state is not one to continue from.
        what = f"interrupted twice after step {step}"
        _record(run, "interrupted", f"{what}; no checkpoint written")
        where = f"continue from the last checkpoint ({last}) with: {again}" if last.exists() else "no checkpoint"
        click.echo(f"{what}: stopped without writing a checkpoint; {where}", err=True)
        return EXIT_INTERRUPTED
    if stage == "finishing":
        # the final checkpoint holds every step; what was cut is the final evaluation
        message = f"interrupted after the last step ({step}), during the final evaluation"
        _record(run, "interrupted", message)
        click.echo(f"{message}; checkpoint {last}; finish it with: {again}", err=True)
        return EXIT_INTERRUPTED
    try:
        with interrupts.current().critical(abandon=True, deliver=False):
            saved = run.checkpoint()
    except KeyboardInterrupt:
        kept = f"the last checkpoint is {last}" if last.exists() else "no checkpoint"
        _record(run, "interrupted", f"interrupted at step {step}; its checkpoint was abandoned")
        click.echo(
            f"interrupted at step {step}; the checkpoint was abandoned ({kept}); continue with: {again}", err=True
        )
        return EXIT_INTERRUPTED
    except (ckpt.CheckpointError, OSError) as e:
        _record(run, "interrupted", f"interrupted at step {step}; the checkpoint could not be written: {e}")
        click.echo(f"interrupted at step {step}; the checkpoint could not be written: {e}", err=True)
        return EXIT_INTERRUPTED
    _record(run, "interrupted", f"interrupted at step {step}")
    click.echo(f"interrupted at step {step}; checkpoint {saved}; continue with: {again}", err=True)
    return EXIT_INTERRUPTED


def failure_message(e: BaseException, expected: tuple[type[BaseException], ...] = ()) -> str:
    """What a command says of an exception that ends it: the message of an ``expected`` kind (the
    engine's own errors), a plain sentence for memory and file-system errors, and "internal error"
    for anything else (a bug: still one line, never a traceback)."""
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


def _failed(run: Any, e: BaseException, expected: tuple[type[BaseException], ...]) -> int:
    """A run that cannot go on: run.json ``failed`` with the message, exit 1 (3 if it diverged), no
    traceback."""
    from onlytorch.rundir import NO_SPACE
    from onlytorch.train import Diverged

    if isinstance(e, Diverged):
        _record(run, "diverged", str(e))
        click.echo(f"error: {e}", err=True)
        if run is not None:
            last = run.last_checkpoint
            click.echo(
                f"the last good checkpoint is {last}"
                if last.exists()
                else "no checkpoint was written before the divergence",
                err=True,
            )
        return EXIT_DIVERGED
    if isinstance(e, OSError) and e.errno in NO_SPACE:
        where = (
            f" {target_of_temporary(str(e.filename))}" if e.filename else (f" in {run.path}" if run is not None else "")
        )
        message = f"cannot write{where}: {e.strerror} (free some space, then continue with --resume)"
    else:
        message = failure_message(e, expected)
    _record(run, "failed", message)
    click.echo(f"error: {message}", err=True)
    if run is not None and run.last_checkpoint.exists():
        click.echo(f"the last good checkpoint is {run.last_checkpoint}", err=True)
    return EXIT_FAILED


def _summary(compiled: Compiled, run: Any, final_eval: dict[str, float], path: pathlib.Path) -> None:
    trainer = run.trainer
    train_values = {k: v for k, v in trainer.last.items()}
    click.echo(_table(f"final training losses (step {trainer.step})", train_values))
    if final_eval and trainer.live is not None:
        n, policy = trainer.episode_settings()
        click.echo(_table(f"evaluation: {n} episodes, {policy} policy (no_grad)", final_eval))
    elif final_eval:
        split = compiled.spec.eval.split if compiled.spec.eval else "test"
        click.echo(_table(f"evaluation on {split} (no_grad)", final_eval))
    click.echo(f"run directory: {path}  (onlytorch report {path})")


def _last_eval(run: Any) -> dict[str, float]:
    rows = [r for r in run.rows if r.get("kind") == "eval"]
    return {k.removeprefix("eval/"): v for k, v in rows[-1].items() if k.startswith("eval/")} if rows else {}


def run_eval(
    compiled: Compiled,
    checkpoint: str,
    split: str | None,
    as_json: bool,
    episodes: int | None = None,
    policy: str | None = None,
) -> int:
    from onlytorch import checkpoint as ckpt
    from onlytorch.data.sources import DataError
    from onlytorch.run import evaluate
    from onlytorch.train import Trainer

    try:
        trainer = Trainer(compiled)
    except DataError as e:
        click.echo(f"error: data: {e}", err=True)
        return EXIT_USAGE
    if trainer.live is not None:
        return _eval_episodes(trainer, checkpoint, split, as_json, episodes, policy)
    if episodes is not None or policy is not None:
        raise click.UsageError("--episodes and --policy apply to specs with a gym training source")
    if compiled.spec.eval is None and split is None:
        raise click.UsageError("the spec has no eval section; give --split")
    used = split or (compiled.spec.eval.split if compiled.spec.eval else "test")
    if trainer.fields and used not in trainer.data:
        have = ", ".join(sorted(trainer.data)) or "none"
        raise click.UsageError(f"the spec has no {used!r} split to evaluate (its splits: {have})")
    try:
        trainer.restore_weights(ckpt.load(checkpoint))
    except ckpt.CheckpointError as e:
        click.echo(f"error: {e}", err=True)
        return EXIT_USAGE
    values = trainer.evaluate(used) if compiled.spec.eval is None else evaluate(compiled, trainer, None, used)
    if as_json:
        click.echo(json.dumps({"split": used, "checkpoint": checkpoint, "metrics": values}, indent=2))
    else:
        click.echo(_table(f"evaluation of {checkpoint} on {used} (no_grad)", values))
    return EXIT_OK


def _eval_episodes(
    trainer: Any, checkpoint: str, split: str | None, as_json: bool, episodes: int | None, policy: str | None
) -> int:
    """Evaluation of an RL spec: whole episodes with the checkpoint's policy, under no_grad."""
    from onlytorch import checkpoint as ckpt

    if split is not None:
        raise click.UsageError("a spec with a gym training source is evaluated in episodes; --split does not apply")
    try:
        trainer.restore_weights(ckpt.load(checkpoint))
    except ckpt.CheckpointError as e:
        click.echo(f"error: {e}", err=True)
        return EXIT_USAGE
    n, used_policy = trainer.episode_settings(episodes, policy)
    values = trainer.episodes(n, used_policy)
    if as_json:
        click.echo(
            json.dumps({"episodes": n, "policy": used_policy, "checkpoint": checkpoint, "metrics": values}, indent=2)
        )
    else:
        click.echo(_table(f"{n} episodes of {checkpoint} ({used_policy} policy, no_grad)", values))
    return EXIT_OK
