"""A trial's seeds spread over the workers (onlytorch/sweep/seeds.py): a worker with no trial to ask
runs a seed of a running trial, into the same run directory, with the same value as when the trial's
own worker runs it; a helper killed mid-seed leaves its seed to the trial's worker."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

pytest.importorskip("optuna")

from optuna.trial import TrialState

from onlytorch.sweep import runner as sweeping
from onlytorch.sweep.study import open_study

from .engine_helpers import info, rows, run_dirs, write_sweep

SEED_STUDY = "seeds: 4\n"
# steps of a seed: long enough (1.3 s on a fast idle machine, where 600 took 0.3 s) that a helper
# worker, started beside the trial's own, is caught running one before the trial's worker runs them all
SEED_STEPS = 3000
TIMEOUT = 120.0


def _claims(trial) -> dict[int, dict]:
    return {int(k.split(":")[1]): v for k, v in trial.user_attrs.items() if k.startswith("claim:") and v}


def _values(out) -> dict[str, float]:
    (row,) = rows(out)
    return {s: float(row[f"seed_{s}"]) for s in "0123"}


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("alone")
    out = folder / "sw"
    result = sweeping.run(write_sweep(folder, SEED_STUDY, steps=SEED_STEPS), out, executor="inline")
    assert result.status == "completed"
    return out


def test_a_seed_study_spreads_its_seeds_over_two_workers(tmp_path, alone):
    out = tmp_path / "sw"
    result = sweeping.run(write_sweep(tmp_path, SEED_STUDY, steps=SEED_STEPS), out, workers=2)
    assert result.status == "completed" and result.exit_code == 0
    (trial,) = open_study(out).trials
    assert trial.state == TrialState.COMPLETE
    # both workers ran seeds of the one trial: the seed claims name two processes
    pids = {c["pid"] for c in _claims(trial).values()}
    assert len(pids) == 2 and trial.user_attrs["worker"]["pid"] in pids
    # each seed ran once, into its own run directory, to the value it has when one worker runs them all
    assert [d.relative_to(out).as_posix() for d in run_dirs(out)] == [f"trials/0000/seed-{s}" for s in range(4)]
    assert _values(out) == _values(alone)
    assert trial.value == pytest.approx(float(rows(alone)[0]["value"]), rel=0, abs=0)
    # the record the outputs read is the one a single worker writes
    assert trial.user_attrs["seeds"] == [0, 1, 2, 3]
    assert trial.user_attrs["run_dirs"] == [f"trials/0000/seed-{s}" for s in range(4)]
    assert info(out)["best"]["values"] == _values(alone)


def test_two_trials_of_two_seeds_on_two_workers_end_at_exactly_two(tmp_path):
    body = """\
    trials: 2
    seeds: [0, 1]
    sampler: {type: random, seed: 0}
    space:
      optimizers.opt.lr: {loguniform: [0.001, 0.1]}
    """
    out = tmp_path / "sw"
    result = sweeping.run(write_sweep(tmp_path, body), out, workers=2)
    assert result.status == "completed"
    assert [r["state"] for r in rows(out)] == ["complete", "complete"]
    assert info(out)["counts"] == {"complete": 2, "pruned": 0, "failed": 0, "running": 0, "waiting": 0}
    for t in open_study(out).trials:
        assert sorted(t.user_attrs["values"]) == ["0", "1"]
        assert all(t.user_attrs[f"seed:{s}"]["state"] == "complete" for s in (0, 1))


def _catch_helper(out, done: threading.Event) -> tuple[int, int]:
    """A helper (a worker running a seed of a trial it did not ask) caught mid-seed and stopped
    (SIGSTOP); returns its pid and the seed."""
    deadline = time.monotonic() + TIMEOUT
    study = None
    while True:
        assert not done.is_set(), "the sweep ended before a helper was caught mid-seed"
        assert time.monotonic() < deadline, "no helper ran a seed"
        try:
            study = study or open_study(out)
            trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except Exception:  # not created yet
            time.sleep(0.05)
            continue
        for t in trials:
            owner = t.user_attrs.get("worker", {}).get("pid")
            for seed, c in _claims(t).items():
                if owner is not None and c["pid"] != owner and f"seed:{seed}" not in t.user_attrs:
                    os.kill(c["pid"], signal.SIGSTOP)
                    again = study._storage.get_trial(t._trial_id)
                    if f"seed:{seed}" not in again.user_attrs:
                        return c["pid"], seed
                    os.kill(c["pid"], signal.SIGCONT)  # it finished meanwhile: catch another
        time.sleep(0.02)


def test_a_helper_killed_mid_seed_leaves_its_seed_to_the_trials_worker(tmp_path, alone):
    out = tmp_path / "sw"
    file = write_sweep(tmp_path, SEED_STUDY, steps=SEED_STEPS)
    ended: list[sweeping.SweepResult] = []
    done = threading.Event()

    def sweep() -> None:
        try:
            ended.append(sweeping.run(file, out, workers=2))
        finally:
            done.set()

    thread = threading.Thread(target=sweep, daemon=True)
    thread.start()
    pid, seed = _catch_helper(out, done)
    os.kill(pid, signal.SIGKILL)
    thread.join(TIMEOUT)
    assert ended, "the sweep did not end"
    result = ended[0]
    assert result.status == "completed" and result.exit_code == 0
    (trial,) = open_study(out).trials
    assert trial.state == TrialState.COMPLETE
    owner = trial.user_attrs["worker"]["pid"]
    # the killed helper's seed was claimed again and run by the trial's own worker, to the same value
    assert _claims(trial)[seed]["pid"] == owner != pid
    assert _values(out) == _values(alone)
    assert '"status": "completed"' in (out / f"trials/0000/seed-{seed}" / "run.json").read_text()


def test_when_the_trials_worker_dies_its_helper_stops_and_the_retry_completes(tmp_path):
    out = tmp_path / "sw"
    file = write_sweep(tmp_path, "seeds: [0, 1]\n", steps=2 * SEED_STEPS)
    ended: list[sweeping.SweepResult] = []
    done = threading.Event()

    def sweep() -> None:
        try:
            ended.append(sweeping.run(file, out, workers=2))
        finally:
            done.set()

    thread = threading.Thread(target=sweep, daemon=True)
    thread.start()
    helper, seed = _catch_helper(out, done)
    (running,) = open_study(out).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    owner = running.user_attrs["worker"]["pid"]
    os.kill(owner, signal.SIGKILL)
    os.kill(helper, signal.SIGCONT)
    thread.join(TIMEOUT)
    assert ended and ended[0].status == "completed"
    first, retry = open_study(out).trials
    assert first.state == TrialState.FAIL and first.user_attrs["error"].startswith(f"worker died (pid {owner} ")
    # the helper stopped its seed once it saw the owner gone (it looks every 2 s), or, when its short
    # run ended before that look, posted a completed seed; either way the failed trial keeps no value
    helper_run = (out / f"trials/0000/seed-{seed}" / "run.json").read_text()
    if f"seed:{seed}" in first.user_attrs:
        assert first.user_attrs[f"seed:{seed}"]["state"] == "complete" and '"status": "completed"' in helper_run
    else:
        assert '"status": "interrupted"' in helper_run
    assert first.value is None and not first.user_attrs.get("values")
    # ... and ran the retry, which completed both seeds
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["retry_of"] == 0
    assert retry.user_attrs["worker"]["pid"] == helper
    assert sorted(retry.user_attrs["values"]) == ["0", "1"]
