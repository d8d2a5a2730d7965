"""One trial of a sweep: the trial's spec (the base spec with the sweep's fixed overrides and the
trial's parameters) trained once per seed, each into an ordinary run directory
SWEEP_DIR/trials/NNNN/seed-S, on one BLAS thread; idle workers may run some of the seeds (see
onlytorch/sweep/seeds.py), the trial's own worker runs the rest and tells the trial. The periodic evaluations of the monitored
quantity feed the pruner; the trial's value is the mean over seeds of each run's best (or
final) value. An invalid trial spec, a diverged or failed run ends the trial as failed with the
message in its ``error`` attribute, never as an exception out of the worker.

The trial's user attributes are the record every output derives from (see docs/sweeps.md)."""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .seeds import run_dir_of

if TYPE_CHECKING:
    import optuna

    from ..app import LoadedSpec
    from .load import Sweep

COMPLETE, PRUNED, FAILED, INTERRUPTED = "complete", "pruned", "failed", "interrupted"

_log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """How a trial ended: ``state`` one of COMPLETE, PRUNED, FAILED, INTERRUPTED (a stop asked
    of the worker: told failed, and retried by the next worker or rerun)."""

    number: int
    state: str
    value: float | None = None
    std: float | None = None
    seeds: list[int] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)
    run_dirs: list[str] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0


def spread(values: list[float]) -> float:
    """The sample standard deviation over seeds (0 for a single seed)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


class _Pruning:
    """The monitored quantity as each periodic evaluation of one run reports it, fed to the
    pruner at steps offset by the seed's position (so the seeds of a trial follow each other on
    one axis); asks the run to stop once the pruner says so."""

    def __init__(self, trial: optuna.Trial, loaded: LoadedSpec, run_dir: pathlib.Path, offset_index: int) -> None:
        from .. import monitor

        self.trial = trial
        self.run_dir = run_dir
        self.index = offset_index
        self.steps_per_run = 0
        self.pruned = False
        self.last: float | None = None
        spec = loaded.compiled.spec
        m = monitor.resolve(spec)
        self.metric = m.metric if m is not None else None
        # the key of the monitored value in the run's log; on_eval's values are eval.split's, which
        # hold it only when the monitor watches eval.split (or episodes / samples)
        self.prefix = monitor.selection_prefix(spec, m) if m is not None and m.on_data else "eval"

    def on_start(self, started: Any) -> None:
        self.steps_per_run = int(started.total)

    def on_eval(self, step: int, values: dict[str, float]) -> None:
        if self.metric is None:
            return
        value = values.get(self.metric) if self.prefix == "eval" else None
        if value is None:
            value = _logged(self.run_dir, f"{self.prefix}/{self.metric}", step)
        if value is None or not math.isfinite(value):
            return
        self.last = float(value)
        self.trial.report(self.last, self.index * self.steps_per_run + step)
        if self.trial.should_prune():
            self.pruned = True


def _logged(run_dir: pathlib.Path, key: str, step: int) -> float | None:
    """``key`` of the run's last logged evaluation of ``step`` (read from the end of metrics.jsonl)."""
    from ..metrics_log import LOG

    try:
        with open(run_dir / LOG, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            tail = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("kind") == "eval" and row.get("step") == step:
            v = row.get(key)
            return float(v) if isinstance(v, (int, float)) else None
    return None


@dataclass
class SeedRun:
    """How one seed's run ended (``state`` COMPLETE, PRUNED, FAILED or INTERRUPTED); as a result
    posted in the trial's record (seeds.RESULT) it holds state, value, error and run_dir."""

    seed: int
    state: str
    value: float | None = None
    error: str | None = None
    run_dir: str | None = None

    def posted(self) -> dict[str, Any]:
        return {"state": self.state, "value": self.value, "error": self.error, "run_dir": self.run_dir}


def run_trial(
    trial: optuna.Trial,
    sweep: Sweep,
    sweep_dir: pathlib.Path,
    should_stop: Callable[[], bool],
) -> Outcome:
    """Train the trial's spec once per seed (stopping early when pruned, failed or asked to stop)
    and record the outcome in the trial's user attributes; the caller tells the study. The seeds
    are claimed one at a time (onlytorch/sweep/seeds.py): idle workers may run some of them; this
    owner runs the rest, then waits for the others' results."""
    from . import space

    t0 = time.monotonic()
    out = Outcome(trial.number, COMPLETE, seeds=list(sweep.seeds))
    runs: dict[int, SeedRun] = {}
    try:
        values = space.suggest(trial, sweep.params)
        overrides = [*sweep.fixed, *space.as_overrides(values)]
        trial.set_user_attr("seeds", list(sweep.seeds))  # the params are suggested: helpers may now take seeds
        _own_seeds(trial, sweep, sweep_dir, overrides, should_stop, runs)
    except Exception as e:  # a bug or an unforeseen error of one trial must not end the sweep
        out.state, out.error = FAILED, f"{type(e).__name__}: {e}"
    try:
        frozen = trial.study._storage.get_trial(trial._trial_id)
    except Exception:  # unreadable now: the owner's own seeds still say what they can
        frozen = None
    _settle(out, sweep.seeds, runs, frozen)
    finished = [out.values[str(s)] for s in sweep.seeds if str(s) in out.values]
    if out.state == COMPLETE and len(finished) < len(sweep.seeds):
        # the owner stopped waiting because its trial ended under it (a reaper took it for dead)
        missing = [s for s in sweep.seeds if str(s) not in out.values]
        out.state, out.error = FAILED, f"no result for seeds {', '.join(map(str, missing))}"
    if out.state == COMPLETE:
        out.value = statistics.fmean(finished)
    if finished:
        out.std = spread(finished)
    out.duration_s = round(time.monotonic() - t0, 3)
    try:
        _record(trial, out)
    except Exception as e:  # the trial was failed meanwhile by a reaper that took this worker for dead
        _log.warning("trial %s: its outcome could not be recorded: %s", trial.number, e)
    return out


def _own_seeds(
    trial: optuna.Trial,
    sweep: Sweep,
    sweep_dir: pathlib.Path,
    overrides: list[str],
    should_stop: Callable[[], bool],
    runs: dict[int, SeedRun],
) -> None:
    """The owner's part: claim and run seeds in order until every seed is done or in another live
    worker's hands, then wait for those (a helper that dies leaves its seed to be claimed again
    here). Stops at the first seed that does not complete, or once a helper's seed did not."""
    from . import seeds as sd

    study = trial.study
    while True:
        seed = sd.claim_own(study, trial, sweep.seeds, sweep_dir)
        if seed is None:
            frozen = study._storage.get_trial(trial._trial_id)
            if sd.decided(frozen, sweep.seeds) or all(sd.result_of(frozen, s) is not None for s in sweep.seeds):
                return
            if should_stop():
                runs[-1] = SeedRun(-1, INTERRUPTED, error=INTERRUPTED)  # not a seed: the owner's stop
                return
            time.sleep(SEED_POLL)
            continue
        watch = sd.Watch(study, trial._trial_id, sweep.seeds, seed, helper=False)
        run = _run_seed(trial, sweep, sweep_dir, overrides, sweep.seeds.index(seed), seed, _either(should_stop, watch))
        if run.state == INTERRUPTED and watch.ended() and not should_stop():
            return  # a helper's seed decided the trial meanwhile: its result says how
        runs[seed] = run
        if run.state != INTERRUPTED:
            sd.post(study, trial._trial_id, seed, run.posted())
        if run.state != COMPLETE:
            return


SEED_POLL = 0.5  # seconds between two looks at the results of the seeds other workers run


def _either(should_stop: Callable[[], bool], watch: Any) -> Callable[[], bool]:
    return lambda: should_stop() or watch.ended()


def _settle(out: Outcome, seeds: list[int], runs: dict[int, SeedRun], frozen: Any) -> None:
    """The trial's outcome from its seeds' results (the owner's own, and those helpers posted in
    the trial's record): the first seed in order that did not complete decides it; an interruption
    of the owner decides it first."""
    from . import seeds as sd

    if out.state == COMPLETE and any(r.state == INTERRUPTED for r in runs.values()):
        out.state, out.error = INTERRUPTED, INTERRUPTED
    for seed in seeds:
        run = runs.get(seed)
        posted = sd.result_of(frozen, seed) if run is None and frozen is not None else None
        if posted is not None:
            value = posted.get("value")
            run = SeedRun(
                seed,
                str(posted.get("state")),
                float(value) if isinstance(value, (int, float)) else None,
                posted.get("error"),
                posted.get("run_dir"),
            )
        if run is None:
            continue
        if run.run_dir is not None:
            out.run_dirs.append(run.run_dir)
        if run.value is not None:  # a seed pruned at its last evaluation has one too
            out.values[str(seed)] = run.value
        if out.state == COMPLETE and run.state != COMPLETE:
            out.state, out.error = (run.state if run.state in (PRUNED, FAILED) else FAILED), run.error


def run_seed_for(
    study: optuna.Study,
    claim: Any,
    sweep: Sweep,
    sweep_dir: pathlib.Path,
    should_stop: Callable[[], bool],
) -> None:
    """A helper's part: run the claimed seed of another worker's trial (its params as the owner
    suggested them) and post its result in the trial's record. Asked to stop (``should_stop``), it
    gives the seed back to the owner; the trial ended or decided by a sibling, it just stops."""
    import optuna

    from . import seeds as sd
    from . import space

    watch = sd.Watch(study, claim.trial_id, sweep.seeds, claim.seed, helper=True)
    try:
        trial = optuna.trial.Trial(study, claim.trial_id)
        frozen = study._storage.get_trial(claim.trial_id)
        overrides = [*sweep.fixed, *space.as_overrides(space.decode(sweep.params, frozen.params))]
        with sd.ClaimBeat(study, claim.trial_id, claim.seed, sweep_dir):
            run = _run_seed(trial, sweep, sweep_dir, overrides, claim.index, claim.seed, _either(should_stop, watch))
    except Exception as e:
        if watch.look():
            return  # the trial ended under the run (a report to a finished trial raises)
        run = SeedRun(claim.seed, FAILED, error=f"seed {claim.seed}: {type(e).__name__}: {e}")
    if run.state == INTERRUPTED:
        if not watch.ended():
            sd.release(study, claim.trial_id, claim.seed)
        return
    sd.post(study, claim.trial_id, claim.seed, run.posted())


def _run_seed(
    trial: optuna.Trial,
    sweep: Sweep,
    sweep_dir: pathlib.Path,
    overrides: list[str],
    index: int,
    seed: int,
    should_stop: Callable[[], bool],
) -> SeedRun:
    """One seed's run into SWEEP_DIR/trials/NNNN/seed-S and how it ended."""
    from ..app import FitError, InvalidSpec, fit, load_spec
    from ..tracking.mlflow_sweep import URI_ENV

    rel = run_dir_of(trial.number, seed)
    path = sweep_dir / rel
    try:
        loaded = load_spec(sweep.spec, seed=seed, overrides=overrides)
    except InvalidSpec as e:
        return SeedRun(seed, FAILED, error=f"invalid trial spec: {e.report.render().strip()}")
    except FitError as e:  # an override that is not key=value
        return SeedRun(seed, FAILED, error=f"invalid trial spec: {e}")
    pruning = _Pruning(trial, loaded, path, index)
    stopped = [False]

    def stop() -> bool:
        if pruning.pruned:
            return True
        if should_stop():
            stopped[0] = True
        return stopped[0]

    try:
        # onlytorch sweep --mlflow URI: each seed's run is a child of the sweep's MLflow run
        mlflow = os.environ.get(URI_ENV) or None
        result = fit(
            loaded, path, threads=1, on_start=pruning.on_start, on_eval=pruning.on_eval, should_stop=stop, mlflow=mlflow
        )
    except FitError as e:
        return SeedRun(seed, FAILED, error=f"seed {seed}: {e}", run_dir=rel)
    if result.status == "interrupted":
        if pruning.pruned and not stopped[0]:
            return SeedRun(seed, PRUNED, run_dir=rel)
        return SeedRun(seed, INTERRUPTED, error=INTERRUPTED, run_dir=rel)
    if result.status in ("diverged", "failed"):
        return SeedRun(
            seed, FAILED, error=f"seed {seed}: {result.status}: {result.message or 'no message'}", run_dir=rel
        )
    if sweep.objective == "final":
        value = pruning.last if pruning.last is not None else result.metrics.get(sweep.metric)
    else:
        value = result.best.get("value") if result.best else None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        error = f"seed {seed}: the run gave no finite value of {sweep.metric!r} ({sweep.objective})"
        return SeedRun(seed, FAILED, error=error, run_dir=rel)
    # the pruner may answer at the run's last evaluation, when nothing is left to stop: the seeds
    # still to come are not run (a trial whose last seed completed keeps its value)
    state = PRUNED if pruning.pruned and index < len(sweep.seeds) - 1 else COMPLETE
    return SeedRun(seed, state, float(value), run_dir=rel)


def _record(trial: optuna.Trial, out: Outcome) -> None:
    trial.set_user_attr("seeds", out.seeds)
    trial.set_user_attr("values", out.values)
    trial.set_user_attr("run_dirs", out.run_dirs)
    trial.set_user_attr("std", out.std)
    trial.set_user_attr("duration_s", out.duration_s)
    if out.error is not None:
        trial.set_user_attr("error", out.error)


def tell(study: optuna.Study, trial: optuna.Trial, out: Outcome) -> bool:
    """Tell the study how the trial ended. A trial that was ended already (a reaper took its worker
    for dead) keeps that record: nothing is told (False when the race was seen)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    state = {COMPLETE: TrialState.COMPLETE, PRUNED: TrialState.PRUNED}.get(out.state, TrialState.FAIL)
    try:
        study.tell(trial, out.value if out.state == COMPLETE else None, state=state, skip_if_finished=True)
    except UpdateFinishedTrialError:  # finished by a reaper between the look and the tell
        return False
    except RuntimeError as e:
        # the grid sampler asks the study to stop once its grid is covered, which Optuna allows only
        # inside study.optimize; the trial is recorded before (the worker's count decides the end)
        if "Study.stop" not in str(e):
            raise
    return True
