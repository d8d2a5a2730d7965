"""``onlytorch.sweep.run`` (this module's ``run``, exposed lazily by the package): a sweep from its
file to its outputs, as ``onlytorch sweep`` runs it.

It loads the sweep file (every mistake reported at once, located), claims the sweep directory
(a directory of another sweep is refused; the same sweep continues, with more trials if the
file now asks for more), creates or loads the study, runs the workers on the chosen executor
and writes the final tables. The study is the record: rerunning the same command after an
interruption, a crash or with a raised ``trials`` continues it until exactly ``trials`` trials
are complete or pruned."""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from ..spec.diagnostics import Report
    from .load import Sweep

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
STOP_FILE = ".stop"  # asks every worker (on any executor) to stop; removed when the next run starts
EXECUTORS = ("local", "ray", "inline")


class SweepError(Exception):
    """A sweep that cannot run (``exit_code`` says how the command ends: 2 for a usage mistake
    or a refused directory, 1 for an unusable storage)."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InvalidSweep(SweepError):
    """The sweep file does not load: ``report`` holds every diagnostic (``report.render()``)."""

    exit_code = EXIT_INVALID

    def __init__(self, file: str, report: Report) -> None:
        self.file, self.report = file, report
        n = len(report.errors)
        super().__init__(f"{file}: invalid ({n} error{'s' if n != 1 else ''})\n{report.render()}")


class SweepRefused(SweepError):
    """The sweep directory holds something else (another sweep, or files that are not a sweep's)."""

    exit_code = EXIT_INVALID


@dataclass
class SweepResult:
    """How a sweep ended: ``status`` "completed" (exactly ``trials`` complete or pruned),
    "interrupted" (resumable: run the same command again) or "failed" (max_failures reached, or
    the workers could not run); ``exit_code`` the command's; ``counts`` and ``best`` as sweep.json."""

    sweep_dir: pathlib.Path
    status: str
    exit_code: int
    counts: dict[str, int] = field(default_factory=dict)
    best: dict[str, Any] | None = None
    message: str | None = None
    trials_requested: int = 0
    retried: int = 0  # of the failed: stopped by a fault (interrupted, worker died) and queued again


def load(file: str | os.PathLike[str]) -> Sweep:
    """The sweep of a file; InvalidSweep with every diagnostic."""
    from .load import load_sweep

    sweep, report = load_sweep(file)
    if sweep is None:
        raise InvalidSweep(os.fspath(file), report)
    return sweep


def default_dir(sweep: Sweep) -> pathlib.Path:
    return pathlib.Path("sweeps") / sweep.name


def describe_plan(sweep: Sweep, sweep_dir: pathlib.Path, storage: str | None, workers: int, executor: str) -> str:
    """What a sweep will do (``--check`` prints it; the command's first lines)."""
    from .study import JOURNAL, redact

    lines = [
        f"sweep {sweep.name}: {sweep.trials} trial{'s' if sweep.trials != 1 else ''} of {sweep.spec}",
        f"  objective: {sweep.objective} {sweep.metric}"
        + (f" on {sweep.split}" if sweep.split else "")
        + f" ({sweep.direction}), the mean over seeds {', '.join(map(str, sweep.seeds))}",
        "  space:" + ("" if sweep.params else " none (a seed study)"),
        *[f"    {p.path}: {_describe_param(p)}" for p in sweep.params],
        *([f"  fixed: {', '.join(sweep.fixed)}"] if sweep.fixed else []),
        f"  sampler: {_options(sweep.sampler)}",
        f"  pruner: {_options(sweep.pruner)}",
        f"  max failures: {sweep.max_failures}",
        f"  storage: {redact(storage) if storage else sweep_dir / JOURNAL}",
        f"  executor: {executor}, {workers} worker{'s' if workers != 1 else ''}; sweep directory {sweep_dir}",
    ]
    return "\n".join(lines)


def _describe_param(p: Any) -> str:
    if p.kind == "choice":
        return f"choice {p.choices}"
    extra = (f", step {p.step}" if p.step is not None else "") + (", log" if p.log else "")
    return f"{p.kind} [{p.low}, {p.high}]{extra}"


def _options(d: dict[str, Any]) -> str:
    rest = ", ".join(f"{k} {v}" for k, v in d.items() if k != "type")
    return f"{d.get('type')}" + (f" ({rest})" if rest else "")


def claim(sweep: Sweep, sweep_dir: pathlib.Path, storage: str | None) -> tuple[optuna.Study, dict[str, Any]]:
    """Create or continue the sweep directory (under its lock) and its study: a new one gets
    sweep.yaml and sweep.json once the study could be created (a storage that cannot be used leaves
    no record naming it); one of the same sweep is continued (``trials`` may have been raised); one
    of another sweep, or a folder that is not a sweep's, is refused. Returns the study and
    sweep.json's content."""
    from . import faults, outputs
    from .record import SWEEP_JSON, RecordError, identity_json, read_info
    from .study import JOURNAL, storage_record

    base_hash = base_spec_hash(sweep)
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepRefused(f"cannot create the sweep directory {sweep_dir}: {e.strerror or e}") from None
    with faults.dir_lock(sweep_dir):
        if (sweep_dir / SWEEP_JSON).exists():
            try:
                info = read_info(sweep_dir)
            except RecordError as e:
                raise SweepRefused(f"{e}; remove it or choose another --out") from None
            _refuse_other(sweep, sweep_dir, info, identity_json(sweep.identity()), storage_record(storage))
            if info.get("spec_hash") not in (None, base_hash):
                raise SweepRefused(
                    f"the base spec {sweep.spec} changed since {sweep_dir} began its sweep: its trials would mix two "
                    "specs. Choose another --out for the changed spec, or put the spec back"
                )
        else:
            # what a first run stopped before writing sweep.json may have left
            started = (faults.LOCK_NAME, JOURNAL, "sweep.yaml")
            others = sorted(p.name for p in sweep_dir.iterdir() if p.name not in started)
            if others:
                raise SweepRefused(
                    f"{sweep_dir} is not empty and holds no sweep ({', '.join(others[:5])}"
                    f"{', ...' if len(others) > 5 else ''}); choose another --out"
                )
            info = {}
        study = _study(sweep_dir, storage, sweep)
        base = outputs.sweep_record(sweep, storage, sweep.trials, base_hash)
        kept: dict[str, Any] = {k: info[k] for k in ("counts", "best", "status") if k in info}
        info = {**base, **kept, "status": "running"}
        if sweep.file.resolve() != (sweep_dir / "sweep.yaml").resolve():
            shutil.copyfile(sweep.file, sweep_dir / "sweep.yaml")
        outputs.write_json(sweep_dir, info)
    return study, info


def base_spec_hash(sweep: Sweep) -> str:
    """The hash of the base spec with the sweep's fixed overrides (as run.json's spec_hash): what
    every trial starts from, which may not change under a running study."""
    from ..app import FitError, load_spec
    from ..run import resolved_spec, spec_hash

    try:
        return spec_hash(resolved_spec(load_spec(sweep.spec, overrides=sweep.fixed).compiled))
    except FitError as e:  # the file changed since load_sweep compiled it
        raise SweepError(str(e), EXIT_INVALID) from None


def _refuse_other(
    sweep: Sweep, sweep_dir: pathlib.Path, info: dict[str, Any], identity: Any, storage: dict[str, str]
) -> None:
    old = info.get("identity")
    if old != identity:
        changed = sorted(k for k in {*(old or {}), *identity} if (old or {}).get(k) != identity.get(k))
        raise SweepRefused(
            f"{sweep_dir} holds another sweep ({info.get('sweep_file', '?')}); what differs: "
            f"{', '.join(changed) or 'everything'}. Only `trials` may change between runs into one sweep "
            "directory: choose another --out (or another name) for this sweep"
        )
    if info.get("storage") != storage:
        raise SweepRefused(
            f"{sweep_dir} runs its study in {_storage_text(info.get('storage'))}, not in {_storage_text(storage)}; "
            "give the same --storage as before"
        )


def _storage_text(record: Any) -> str:
    if not isinstance(record, dict):
        return "an unknown storage"
    return f"the journal {record.get('path')}" if record.get("kind") == "journal" else f"{record.get('url')}"


def run(
    file: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    workers: int = 1,
    storage: str | None = None,
    executor: str = "local",
    address: str | None = None,
    quiet: bool = True,
    imports: Sequence[str] = (),
    say: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run the sweep of ``file`` into ``out`` (default: sweeps/NAME) until exactly its ``trials``
    trials are complete or pruned, with ``workers`` workers on ``executor`` ("local": processes on
    this machine; "ray": Ray tasks on the cluster at ``address``, or a local Ray instance;
    "inline": the one worker in this process, for debugging), its
    study in ``storage`` (an RDB URL; default: the journal SWEEP_DIR/study.log). Progress lines
    go to ``say`` (default: stderr) unless ``quiet``. ``imports``: the user's extension modules,
    imported by every worker. Raises InvalidSweep / SweepRefused / SweepError (see exit_code) for
    what it refuses before running; returns how the sweep ended."""
    if executor not in EXECUTORS:
        raise SweepError(f"no executor {executor!r} (use local or ray)")
    if workers < 1 or (executor == "inline" and workers != 1):
        raise SweepError(f"workers must be at least 1 (exactly 1 inline), got {workers}")
    speak = say or (lambda text: print(text, file=sys.stderr, flush=True))
    tell: Callable[[str], None] = (lambda text: None) if quiet else speak
    if executor == "ray" and address is not None:
        from .ray_executor import RayUsageError, parse_address

        try:
            parse_address(address)  # a malformed address is a usage mistake: refused before anything is written
        except RayUsageError as e:
            raise SweepError(str(e), EXIT_INVALID) from None
    sweep = load(file)
    sweep_dir = pathlib.Path(out) if out is not None else default_dir(sweep)
    study, info = claim(sweep, sweep_dir, storage)
    (sweep_dir / STOP_FILE).unlink(missing_ok=True)
    requested = int(info["trials_requested"])
    before = _counts(study)
    tell(describe_plan(sweep, sweep_dir, storage, workers, executor))
    if before["complete"] + before["pruned"] >= requested:
        tell(f"nothing to do: {before['complete'] + before['pruned']}/{requested} trials are done")
        return _finish(study, sweep, sweep_dir, requested, interrupted=False, message=None, tell=tell)
    from .progress import Progress

    message = None
    with Progress(study, requested, tell):
        interrupted, message = _execute(sweep_dir, workers, storage, executor, address, imports)
    return _finish(study, sweep, sweep_dir, requested, interrupted=interrupted, message=message, tell=tell)


def _study(sweep_dir: pathlib.Path, storage: str | None, sweep: Sweep) -> optuna.Study:
    from .study import StorageError, create_study
    from .worker import quiet_optuna

    quiet_optuna()
    try:
        return create_study(sweep_dir, storage, sweep)
    except StorageError as e:
        raise SweepError(str(e)) from None


def _counts(study: optuna.Study) -> dict[str, int]:
    from .outputs import counts

    return counts(study.get_trials(deepcopy=False))


def _execute(
    sweep_dir: pathlib.Path,
    workers: int,
    storage: str | None,
    executor: str,
    address: str | None,
    imports: Sequence[str],
) -> tuple[bool, str | None]:
    """Run the workers; (interrupted, why the workers could not finish or None)."""
    stop_file = str((sweep_dir / STOP_FILE).absolute())
    if executor == "ray":
        from .ray_executor import RayExecutorError, run_ray

        try:
            run_ray(str(sweep_dir.absolute()), workers, storage, address, stop_file, imports)
        except KeyboardInterrupt:
            (sweep_dir / STOP_FILE).touch()
            return True, None
        except RayExecutorError as e:
            if e.exit_code == EXIT_INVALID:  # a usage mistake (address, storage): nothing ran
                raise SweepRefused(str(e)) from None
            return False, str(e)  # an unreachable cluster, tasks that could not run: a failed sweep
        return False, None  # tasks that ended short of the goal were stopped (the stop file)
    if executor == "inline":
        return _inline(sweep_dir, storage, stop_file)
    from .local import run_local

    ran = run_local(str(sweep_dir.absolute()), workers, storage, stop_file, imports)
    bad = [f"worker {i} exited with {c}" for i, c in enumerate(ran.codes) if c not in (0, EXIT_INTERRUPTED, -2)]
    return ran.interrupted, "; ".join(bad) or None


def _inline(sweep_dir: pathlib.Path, storage: str | None, stop_file: str) -> tuple[bool, str | None]:
    from .study import StorageError
    from .worker import WorkerError, run_worker

    try:
        run_worker(str(sweep_dir.absolute()), 0, storage, stop_file)
    except (WorkerError, StorageError) as e:
        return False, str(e)
    except KeyboardInterrupt:
        return True, None
    return False, None


def _finish(
    study: optuna.Study,
    sweep: Sweep,
    sweep_dir: pathlib.Path,
    requested: int,
    *,
    interrupted: bool,
    message: str | None,
    tell: Callable[[str], None],
) -> SweepResult:
    """The final tables, and how the sweep ended."""
    from . import faults, outputs
    from .record import count

    c = count(study.get_trials(deepcopy=False))
    if c.done >= requested:
        status, code, message = "completed", EXIT_OK, None
    elif c.failed >= sweep.max_failures:
        status, code = "failed", EXIT_FAILED
        message = f"{c.failed} trials failed (max_failures {sweep.max_failures}); see the error column of trials.csv"
    elif interrupted or message is None:
        # workers that ended cleanly short of the goal were stopped (a signal, the stop file)
        status, code = "interrupted", EXIT_INTERRUPTED
        message = f"interrupted at {c.done}/{requested} trials done; run the same command again to continue"
    else:
        status, code = "failed", EXIT_FAILED
        message = f"the workers stopped at {c.done}/{requested} trials done" + (f": {message}" if message else "")
    with faults.dir_lock(sweep_dir):
        # a worker killed under this command leaves its trial RUNNING: failed now (and retried by the
        # rerun) rather than shown as running; live workers of another command are not touched
        faults.reap_stale(study)
        info = outputs.write_outputs(sweep_dir, study, sweep, status)
    result = SweepResult(sweep_dir, status, code, info["counts"], info.get("best"), message, requested, c.faults)
    tell(summary(result, sweep))
    return result


def summary(result: SweepResult, sweep: Sweep) -> str:
    """The command's closing lines."""
    c = result.counts
    lines = [
        f"sweep {sweep.name} {result.status}: {c.get('complete', 0)} complete, {c.get('pruned', 0)} pruned, "
        f"{c.get('failed', 0)} failed"
        + (f" ({result.retried} by an interruption or a lost worker, retried)" if result.retried else "")
        + f" of {result.trials_requested} requested ({result.sweep_dir})"
    ]
    best = result.best
    if best is not None:
        params = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        std = f" ± {best['std']:.3g}" if best.get("std") is not None and len(best.get("values", {})) > 1 else ""
        lines.append(
            f"best: trial {best['number']}, {sweep.metric} {best['value']:.6g}{std}"
            + (f" ({params})" if params else "")
        )
        lines.append(f"      {result.sweep_dir / 'best.yaml'}")
    if result.message:
        lines.append(result.message)
    return "\n".join(lines)
