"""A sweep worker: its own ask/tell loop over the shared study, one trial at a time, until exactly
the requested number of trials is complete or pruned. Every executor runs this same function
(local processes: ``python -m onlytorch.sweep.worker SWEEP_DIR --index I``; Ray: one task each).

Exactly N: under the sweep directory's lock a worker first fails the trials of dead workers
(each gets one retry, a WAITING trial), then counts. It stops once complete + pruned >= N, takes
a WAITING trial (a retry) before anything new, and asks a new trial only while
complete + pruned + running < N; otherwise it helps a running trial with one of its seeds that no
one has claimed (onlytorch/sweep/seeds.py), or waits for the running ones (one of them may fail
and need replacing). A trial stopped by Ctrl-C/SIGTERM is failed as "interrupted" with one
retry, so that rerunning the command continues the study."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pathlib
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any

from .seeds import SeedClaim

if TYPE_CHECKING:
    import optuna

    from .load import Sweep

POLL = 0.5  # seconds between two looks at the study while the other workers finish the last trials
STORAGE_ENV = "ONLYTORCH_SWEEP_STORAGE"  # a storage URL for a worker process (not on its command line: a password)
IMPORTS_ENV = "ONLYTORCH_SWEEP_IMPORTS"  # the user's --import modules, comma-separated

_log = logging.getLogger(__name__)


class WorkerError(Exception):
    """The worker cannot run: the sweep directory, its sweep file or the storage is unusable."""


def load_recorded(sweep_dir: pathlib.Path, info: dict[str, Any]) -> Sweep:
    """The sweep that sweep.json records, loaded from its sweep file (the file the command was
    given: its relative spec path resolves from the file's own folder), which must still describe
    the same sweep."""
    from .load import load_sweep
    from .record import identity_json

    file = str(info.get("sweep_file", ""))
    sweep, report = load_sweep(file)
    if sweep is None:
        raise WorkerError(f"the sweep file {file} no longer loads:\n{report.render()}")
    if identity_json(sweep.identity()) != info.get("identity"):
        raise WorkerError(f"the sweep file {file} was changed into another sweep while {sweep_dir} runs it")
    return sweep


def quiet_optuna() -> None:
    """Optuna logs every told trial at INFO and warns about its experimental parts: the sweep's
    own progress lines say what matters."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def run_worker(sweep_dir: str, index: int, storage: str | None, stop_file: str | None) -> int:
    """The ask/tell loop of worker ``index`` (its sampler seed derives from it); returns how many
    trials it finished (told complete, pruned or failed). Stops early when ``stop_file`` appears or
    SIGINT/SIGTERM arrives (in the main thread), or when the sweep's max_failures is reached.
    WorkerError or study.StorageError when it cannot run at all."""
    import optuna

    from . import faults
    from .record import RecordError, read_info
    from .study import load_study, make_pruner, make_sampler, make_storage

    quiet_optuna()
    path = pathlib.Path(sweep_dir)
    try:
        info = read_info(path)
    except RecordError as e:
        raise WorkerError(str(e)) from None
    sweep = load_recorded(path, info)
    store = make_storage(path, storage)
    name = str(info["study_name"])
    at_start = len(load_study(store, name).get_trials(deepcopy=False))
    study = load_study(store, name, make_sampler(sweep, index, at_start), make_pruner(sweep))
    finished = 0
    with faults.StopFlag(stop_file) as stop:
        while not stop.is_set():
            with contextlib.suppress(RecordError):  # being replaced: the last one read stands
                info = read_info(path)  # a rerun may have raised the number of trials
            requested = int(info.get("trials_requested", sweep.trials))
            trial = _next_trial(study, path, requested, sweep.max_failures, sweep.seeds)
            if trial is None:
                break
            if trial is _WAIT:
                time.sleep(POLL)
                continue
            if isinstance(trial, SeedClaim):  # a seed of another worker's trial: not a trial of this one's
                _help(study, trial, sweep, path, stop)
                continue
            assert isinstance(trial, optuna.Trial)
            if _run_one(study, trial, sweep, path, stop):
                finished += 1
            else:
                break
    return finished


_WAIT: Any = object()  # nothing to ask now, but the running trials may still need a replacement


def _next_trial(
    study: optuna.Study, path: pathlib.Path, requested: int, max_failures: int, sweep_seeds: list[int]
) -> Any:
    """The trial to run next (a retry first), else a seed of a running trial to help with (a
    SeedClaim), _WAIT, or None when this worker is done."""
    from . import faults, seeds
    from .record import count

    # the directory's lock serialises the processes on this sweep directory; the study's lock those
    # that share only an RDB study (other machines, other --out): counting and asking is one step
    with faults.dir_lock(path), faults.study_lock(study):
        faults.reap_stale(study)
        c = count(study.get_trials(deepcopy=False))
        if c.done >= requested or c.failed >= max_failures:
            return None
        if c.waiting or c.done + c.running < requested:
            trial = study.ask()  # takes the oldest WAITING trial when there is one
            return _WAIT if _surplus(study, trial, requested) else trial
        # nothing to ask: help a running trial with one of its seeds
        return seeds.claim_free(study, sweep_seeds, path) or _WAIT


def _surplus(study: optuna.Study, trial: optuna.Trial, requested: int) -> bool:
    """Whether ``trial`` is one too many: the directory's lock holds only on this machine, so a
    process on another machine sharing the study (an RDB storage) may have asked the last trial at
    the same moment. The later of the two (by number) steps back: failed as surplus, with no retry
    and not counted as a failure of the sweep."""
    from optuna.trial import TrialState

    busy = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    ahead = [t for t in study.get_trials(deepcopy=False, states=busy) if t.number < trial.number]
    if len(ahead) < requested:
        return False
    # not counted by max_failures; not retried (the reaper and retry look at RUNNING trials only)
    trial.set_user_attr("error", "surplus: another process asked the last trial at the same time")
    trial.set_user_attr("surplus", True)
    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    return True


def _help(study: optuna.Study, claim: SeedClaim, sweep: Sweep, path: pathlib.Path, stop: Any) -> None:
    """Run a seed of another worker's trial; its owner tells the trial."""
    from .trial import run_seed_for

    try:
        run_seed_for(study, claim, sweep, path, stop.is_set)
    except KeyboardInterrupt:  # a second Ctrl-C: the seed goes back to its owner
        from .seeds import release

        release(study, claim.trial_id, claim.seed)


def _run_one(study: optuna.Study, trial: optuna.Trial, sweep: Sweep, path: pathlib.Path, stop: Any) -> bool:
    """Run and tell one trial; False when the worker is to stop (it was interrupted)."""
    from . import faults, outputs
    from .trial import INTERRUPTED, run_trial, tell

    try:
        with faults.Heartbeat(study, trial) as beat:
            outcome = run_trial(trial, sweep, path, stop.is_set)
    except KeyboardInterrupt:  # a second Ctrl-C during the trial's bookkeeping
        faults.fail_trial(study, trial, INTERRUPTED)
        return False
    if beat.lost:
        return True  # another process took this worker for dead and failed the trial: its record stands
    if outcome.state == INTERRUPTED:
        faults.fail_trial(study, trial, INTERRUPTED)
        return False
    tell(study, trial, outcome)
    with faults.dir_lock(path):
        try:
            # best.yaml (a compile) is the command's to write at the end: not under the lock here
            outputs.write_outputs(path, study, sweep, "running", with_best=False)
        except OSError as e:  # the record is the study: a table not rewritten now is rewritten later
            _log.warning("cannot update the sweep's tables in %s: %s", path, e)
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m onlytorch.sweep.worker SWEEP_DIR --index I [--stop-file F]`` (the storage URL, if
    any, in $ONLYTORCH_SWEEP_STORAGE). Exit 0 when the loop ended normally (the study says how the
    sweep stands), 1 when the worker could not run, 130 when interrupted."""
    parser = argparse.ArgumentParser(prog="python -m onlytorch.sweep.worker")
    parser.add_argument("sweep_dir")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--stop-file", default=None)
    args = parser.parse_args(argv)
    _import_extensions(os.environ.get(IMPORTS_ENV, ""))
    from .study import StorageError

    try:
        run_worker(args.sweep_dir, args.index, os.environ.get(STORAGE_ENV) or None, args.stop_file)
    except (WorkerError, StorageError) as e:
        print(f"error: worker {args.index}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _import_extensions(names: str) -> None:
    """The user's extension modules (the command's --import), as the command imported them."""
    import importlib

    if names and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in filter(None, names.split(",")):
        importlib.import_module(name)


if __name__ == "__main__":
    sys.exit(main())
