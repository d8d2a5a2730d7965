"""The bodies of ``onlytorch train`` and ``onlytorch eval``: run directories, progress, exit codes."""

from __future__ import annotations

import contextlib
import json
import pathlib
import shlex
import sys
import time
from typing import Any

import click

from onlytorch.compile import Compiled

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _run_dir(compiled: Compiled, out: str | None, resume: bool) -> pathlib.Path:
    if out is not None:
        path = pathlib.Path(out)
        if resume:
            if not (path / "checkpoints" / "last.npz").exists():
                raise click.UsageError(f"--resume: {path} holds no checkpoint to continue from (checkpoints/last.npz)")
            return path
        if (path / "run.json").exists():
            raise click.UsageError(f"{path} already holds a run; continue it with --resume, or choose another --out")
        return path
    if resume:
        raise click.UsageError("--resume needs --out RUN_DIR: the run to continue")
    base = pathlib.Path("runs") / compiled.spec.name
    path, i = base, 2
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    return path


class Progress:
    """One status line on a terminal (redrawn at most 10 times a second); log lines otherwise."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.tty = sys.stderr.isatty() and not quiet
        self.quiet = quiet
        self.last = 0.0
        self.t0 = time.perf_counter()
        self.start_step: int | None = None

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
        click.echo(f"step {step}/{self.total}  {shown}", err=True)

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
    from onlytorch import checkpoint as ckpt
    from onlytorch.data.sources import DataError
    from onlytorch.run import Run, spec_changes
    from onlytorch.train import Diverged, Record, Trainer, train_loop

    if compiled.spec.train is None:
        raise click.UsageError(f"{spec_file} has no train section")
    path = _run_dir(compiled, out, resume)
    try:
        trainer = Trainer(compiled)
    except DataError as e:
        click.echo(f"error: data: {e}", err=True)
        return EXIT_FAILED
    run = Run(path, compiled, trainer, spec_file, overrides)
    if resume:
        try:
            state = ckpt.load(run.last_checkpoint)
        except ckpt.CheckpointError as e:
            click.echo(f"error: cannot resume: {e}", err=True)
            return EXIT_USAGE
        saved = str(state.get("meta/spec_hash", ""))
        if saved != run.hash:
            try:
                old = json.loads((path / "spec.json").read_text(encoding="utf-8"))
                changes = spec_changes(old, run.resolved)
            except (OSError, ValueError):
                changes = ["(the run's spec.json is missing or unreadable)"]
            if not force:
                click.echo(
                    f"error: the spec changed since {path} was written:\n  "
                    + "\n  ".join(changes or ["(the spec hash differs)"]),
                    err=True,
                )
                click.echo("resume with --force to continue anyway", err=True)
                return EXIT_USAGE
        try:
            trainer.restore(state)
        except ckpt.CheckpointError as e:
            click.echo(f"error: {e}", err=True)
            return EXIT_USAGE
    try:
        run.start(resume)
    except OSError as e:
        click.echo(f"error: cannot write the run directory {path}: {e.strerror or e}", err=True)
        return EXIT_FAILED
    total = trainer.total_steps()
    if not quiet:
        what = f"resuming at step {trainer.step}" if resume else "training"
        click.echo(f"{compiled.spec.name}: {what}, {total} steps -> {path}", err=True)
    progress = Progress(total, quiet)

    def on_log(rec: Record) -> None:
        run.log("train", rec)
        run.write_info()
        progress.log(rec.step, rec.values)

    def on_eval(rec: Record) -> None:
        run.evaluate(rec.step)

    def on_checkpoint() -> None:
        run.checkpoint()

    stop = _StopRequest()
    previous = _interrupt_on_signals(stop)
    try:
        evaluates = compiled.spec.eval is not None or trainer.live is not None
        on_eval_ = on_eval if evaluates else None
        train_loop(trainer, total, on_log, on_eval_, on_checkpoint, progress.update, should_stop=stop)
        progress.close()
        run.checkpoint()
        evaluated = any(r.get("kind") == "eval" and r.get("step") == trainer.step for r in run.rows)
        final_eval = run.evaluate(trainer.step) if evaluates and not evaluated else _last_eval(run)
        run.finish("completed")
    except Diverged as e:
        progress.close()
        run.finish("diverged", str(e))
        click.echo(f"error: {e}", err=True)
        last = run.last_checkpoint
        click.echo(
            f"the last good checkpoint is {last}"
            if last.exists()
            else "no checkpoint was written before the divergence",
            err=True,
        )
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        progress.close()
        sets = " ".join(f"--set {shlex.quote(o)}" for o in overrides)
        again = f"onlytorch train {shlex.quote(spec_file)} --out {shlex.quote(str(path))} --resume {sets}".rstrip()
        if stop.forced:
            # A second signal stopped an iteration halfway: its state is not one to continue from.
            what = f"interrupted twice during step {trainer.step + 1}"
            run.finish("interrupted", f"{what}; no checkpoint written")
            last = run.last_checkpoint
            where = f"continue from the last checkpoint ({last}) with: {again}" if last.exists() else "no checkpoint"
            click.echo(f"{what}: stopped without writing a checkpoint; {where}", err=True)
            return EXIT_INTERRUPTED
        try:
            saved_path = run.checkpoint()
            run.finish("interrupted", f"interrupted at step {trainer.step}")
            click.echo(f"interrupted at step {trainer.step}; checkpoint {saved_path}; continue with: {again}", err=True)
        except (ckpt.CheckpointError, OSError) as e:
            click.echo(f"interrupted at step {trainer.step}; the checkpoint could not be written: {e}", err=True)
        return EXIT_INTERRUPTED
    except (ckpt.CheckpointError, OSError) as e:
        progress.close()
        run.finish("failed", str(e))
        click.echo(f"error: {e}", err=True)
        return EXIT_FAILED
    finally:
        _restore_signals(previous)
    train_values = {k: v for k, v in trainer.last.items()}
    click.echo(_table(f"final training losses (step {trainer.step})", train_values))
    if final_eval and trainer.live is not None:
        n, policy = trainer.episode_settings()
        click.echo(_table(f"evaluation: {n} episodes, {policy} policy (no_grad)", final_eval))
    elif final_eval:
        split = compiled.spec.eval.split if compiled.spec.eval else "test"
        click.echo(_table(f"evaluation on {split} (no_grad)", final_eval))
    click.echo(f"run directory: {path}  (onlytorch report {path})")
    return EXIT_OK


class _StopRequest:
    """Set by SIGINT/SIGTERM; the training loop stops at the next iteration boundary, so that the
    checkpoint it writes holds no half-done iteration. A second signal stops at once (forced)."""

    def __init__(self) -> None:
        self.signals = 0

    @property
    def forced(self) -> bool:
        return self.signals > 1

    def __call__(self) -> bool:
        return self.signals > 0


def _interrupt_on_signals(stop: _StopRequest) -> dict[int, Any]:
    """Ctrl-C and SIGTERM both stop training the same way: at the end of the current iteration,
    checkpoint, then exit 130."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        stop.signals += 1
        if stop.forced:
            raise KeyboardInterrupt

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Outside the main thread (an embedding application) signal() refuses: keep its handlers.
        with contextlib.suppress(ValueError):
            previous[sig] = signal.signal(sig, handler)
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    import signal

    for sig, old in previous.items():
        signal.signal(sig, old)


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
        return EXIT_FAILED
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
