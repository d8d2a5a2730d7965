"""A trial's seeds as units of work that any worker can take, so that a seed study (one trial, many
seeds) or the last trials of a sweep keep every worker busy.

The worker that asked a trial (its owner) runs its seeds in order; a worker that can neither take a
waiting trial nor ask a new one (complete + running >= N) claims a seed of a running trial that no
one has claimed yet and runs it into the same run directory, SWEEP_DIR/trials/NNNN/seed-S. All of it
is recorded in the trial's user attributes (the study stays the single record):

- ``claim:<seed>``: the worker record ({host, pid, started}) of the process running that seed, with
  ``heartbeat`` (unix time, refreshed while it runs); None once given back (a stopped helper).
- ``seed:<seed>``: the seed's result {state, value, error, run_dir} (state: complete, pruned, failed).

Claims are taken under the sweep directory's lock and the study's lock (the locks of ask), so a seed
is claimed once. The owner waits (its trial's heartbeat running) for the results of the seeds others
run and tells the trial; a helper that dies (its pid gone, or its claim's heartbeat silent for the
grace period) leaves its seed to the owner, which runs it again. A helper stops its run as soon as
the trial is no longer running (told, or failed because its owner died) or a sibling seed was
pruned or failed (the trial's outcome is decided then)."""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

CLAIM, RESULT = "claim:", "seed:"
WATCH_INTERVAL = 2.0  # seconds between two looks at a trial's record from a running seed's should_stop


def run_dir_of(number: int, seed: int) -> str:
    """A trial's run directory for one seed, relative to the sweep directory."""
    return f"trials/{number:04d}/seed-{seed}"


@dataclass(frozen=True)
class SeedClaim:
    """A seed of another worker's running trial that this worker claimed."""

    trial_id: int
    number: int
    seed: int
    index: int  # the seed's position in the sweep's seeds (its pruning steps are offset by it)


def claim_of(trial: FrozenTrial, seed: int) -> dict[str, Any] | None:
    c = trial.user_attrs.get(f"{CLAIM}{seed}")
    return c if isinstance(c, dict) else None


def result_of(trial: FrozenTrial, seed: int) -> dict[str, Any] | None:
    r = trial.user_attrs.get(f"{RESULT}{seed}")
    return r if isinstance(r, dict) else None


def decided(trial: FrozenTrial, seeds: list[int], but: int | None = None) -> bool:
    """Whether a seed of the trial (other than ``but``) was pruned or failed: its outcome is known."""
    return any((r := result_of(trial, s)) is not None and r.get("state") != "complete" for s in seeds if s != but)


def stale(claim: dict[str, Any], grace: float | None = None) -> bool:
    """Whether the worker of a claim is gone: its process died (this host) or its claim's heartbeat
    is older than the grace period (any host)."""
    from . import faults

    if faults.worker_alive(claim) is False:
        return True
    beat = claim.get("heartbeat")
    grace = faults.grace_period() if grace is None else grace
    return isinstance(beat, (int, float)) and time.time() - beat > grace


@contextlib.contextmanager
def locked(study: optuna.Study, sweep_dir: pathlib.Path) -> Iterator[None]:
    """The locks of ask: a claim is one step for every process on the study."""
    from . import faults

    with faults.dir_lock(sweep_dir), faults.study_lock(study):
        yield


def _take(study: optuna.Study, trial_id: int, seed: int, sweep_dir: pathlib.Path, rel: str) -> None:
    """Record this process's claim of ``seed`` and clear what an earlier claimant left in its run
    directory (a killed run: the trainer refuses a directory that holds one)."""
    from . import faults

    study._storage.set_trial_user_attr(trial_id, f"{CLAIM}{seed}", {**faults.worker_record(), "heartbeat": time.time()})
    shutil.rmtree(sweep_dir / rel, ignore_errors=True)


def claim_own(study: optuna.Study, trial: optuna.Trial, seeds: list[int], sweep_dir: pathlib.Path) -> int | None:
    """For the trial's owner: the first seed (in order) that is neither done nor being run by a live
    worker, now claimed by this process; None when every seed is done or in live hands."""
    with locked(study, sweep_dir):
        frozen = study._storage.get_trial(trial._trial_id)
        for seed in seeds:
            if result_of(frozen, seed) is not None:
                continue
            c = claim_of(frozen, seed)
            if c is None or stale(c):
                _take(study, trial._trial_id, seed, sweep_dir, run_dir_of(trial.number, seed))
                return seed
    return None


def claim_free(study: optuna.Study, seeds: list[int], sweep_dir: pathlib.Path) -> SeedClaim | None:
    """For a worker with nothing to ask: an unclaimed seed of a running trial whose owner has begun it
    (its ``seeds`` attribute is set: its params are suggested) and whose outcome is still open, now
    claimed by this process. Call it under ``locked``. A seed claimed by a worker that died is the
    owner's to run again, not a helper's."""
    from optuna.trial import TrialState

    if len(seeds) < 2:
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("seeds") != seeds or decided(t, seeds):
            continue
        for index, seed in enumerate(seeds):
            if f"{CLAIM}{seed}" not in t.user_attrs and result_of(t, seed) is None:
                _take(study, t._trial_id, seed, sweep_dir, run_dir_of(t.number, seed))
                return SeedClaim(t._trial_id, t.number, seed, index)
    return None


def release(study: optuna.Study, trial_id: int, seed: int) -> None:
    """Give a claimed seed back (a helper asked to stop): the owner runs it."""
    with contextlib.suppress(*_finished_errors()):  # the trial ended meanwhile: nothing to give back
        study._storage.set_trial_user_attr(trial_id, f"{CLAIM}{seed}", None)


def post(study: optuna.Study, trial_id: int, seed: int, result: dict[str, Any]) -> bool:
    """Record a seed's result in its trial; False when the trial has ended meanwhile."""
    try:
        study._storage.set_trial_user_attr(trial_id, f"{RESULT}{seed}", result)
    except _finished_errors():
        return False
    return True


class Watch:
    """``ended()``: whether the seed running in this process is no longer wanted: its trial is no
    longer running, a sibling seed was pruned or failed, or (a helper's) its claim was taken over
    or the trial's owner is gone.
    Reads the storage at most every WATCH_INTERVAL seconds (it is asked at every iteration)."""

    def __init__(self, study: optuna.Study, trial_id: int, seeds: list[int], seed: int, helper: bool) -> None:
        self.study, self.trial_id, self.seeds, self.seed, self.helper = study, trial_id, seeds, seed, helper
        self._ended = False
        self._looked = time.monotonic()

    def ended(self) -> bool:
        if not self._ended and time.monotonic() - self._looked >= WATCH_INTERVAL:
            self._looked = time.monotonic()
            self._ended = self.look()
        return self._ended

    def look(self) -> bool:
        from optuna.trial import TrialState

        from . import faults

        try:
            t = self.study._storage.get_trial(self.trial_id)
        except Exception:  # a busy storage: look again next time
            return False
        if t.state != TrialState.RUNNING or decided(t, self.seeds, but=self.seed):
            return True
        if self.helper:
            # the owner gone (its trial is failed at the next reap): nobody would tell the trial
            mine = _is(claim_of(t, self.seed), faults.worker_record())
            return not mine or faults.stale_reason(t) is not None
        return False


class ClaimBeat:
    """While a helper runs its seed, the claim's heartbeat is refreshed every interval (a daemon
    thread), so that the owner can tell a live helper from a silent one."""

    def __init__(self, study: optuna.Study, trial_id: int, seed: int, sweep_dir: pathlib.Path) -> None:
        from . import faults

        self.study, self.trial_id, self.seed, self.sweep_dir = study, trial_id, seed, sweep_dir
        self.interval = faults.heartbeat_interval()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"onlytorch-claim-{trial_id}-{seed}", daemon=True)

    def _run(self) -> None:
        from . import faults

        while not self._stop.wait(self.interval):
            try:
                # under the claim locks: an owner that took this claim over keeps it
                with locked(self.study, self.sweep_dir):
                    t = self.study._storage.get_trial(self.trial_id)
                    mine = faults.worker_record()
                    if not _is(claim_of(t, self.seed), mine):
                        return  # given back or taken over: Watch stops the run
                    self.study._storage.set_trial_user_attr(
                        self.trial_id, f"{CLAIM}{self.seed}", {**mine, "heartbeat": time.time()}
                    )
            except _finished_errors():
                return  # the trial ended: Watch stops the run
            except Exception:  # a missed beat must not end the run; the next one may pass
                continue

    def __enter__(self) -> ClaimBeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _is(claim: dict[str, Any] | None, record: dict[str, Any]) -> bool:
    return claim is not None and (claim.get("host"), claim.get("pid")) == (record["host"], record["pid"])


def _finished_errors() -> tuple[type[BaseException], ...]:
    """What the storage raises for a write to a trial that has ended (or a write it refused)."""
    from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError

    return (UpdateFinishedTrialError, StorageInternalError)
