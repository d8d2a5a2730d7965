"""Running sweeps (onlytorch/sweep/runner.py, worker.py, trial.py, local.py): exactly N trials with
parallel workers, reproducible trials with one worker, failed trials that do not end the sweep,
reruns that continue or do nothing, seed studies and pruning. Trials are xor runs of 30 steps."""

from __future__ import annotations

import os
import pathlib

import pytest

pytest.importorskip("optuna")

from onlytorch.sweep import runner as sweeping

from .engine_helpers import BLOWUP, info, rows, run_dirs, write_sweep

SPACE = """\
trials: 4
seeds: [0, 1]
space:
  optimizers.opt.lr: {loguniform: [0.001, 0.1]}
  modules.net.0.linear: {choice: [4, 8]}
"""


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path, sweeping.SweepResult]:
    folder = tmp_path_factory.mktemp("two")
    file = write_sweep(folder, SPACE)
    out = folder / "sw"
    return file, out, sweeping.run(file, out, workers=2)


def test_two_local_workers_complete_exactly_n_trials(two_workers):
    _, out, result = two_workers
    assert result.status == "completed" and result.exit_code == 0
    table = rows(out)
    assert [r["state"] for r in table] == ["complete"] * 4
    assert sorted(int(r["number"]) for r in table) == [0, 1, 2, 3]
    record = info(out)
    assert record["counts"] == {"complete": 4, "pruned": 0, "failed": 0, "running": 0, "waiting": 0}
    assert record["status"] == "completed" and record["trials_requested"] == 4
    # one ordinary run directory per trial and seed, each completed
    dirs = run_dirs(out)
    assert [d.relative_to(out).as_posix() for d in dirs] == [
        f"trials/{n:04d}/seed-{s}" for n in range(4) for s in (0, 1)
    ]
    assert all('"status": "completed"' in (d / "run.json").read_text() for d in dirs)
    # each trial records the worker process that ran it: one of the two, never this process. On a
    # loaded machine one worker can finish all four short trials before the other has started
    # (seen in CI), so which of them took trials is not asserted here; test_run_seeds.py shows
    # two workers sharing one trial's seeds.
    from onlytorch.sweep.study import open_study

    study = open_study(out)
    pids = {t.user_attrs["worker"]["pid"] for t in study.trials}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids
    # each worker's sampler has its own seed: the parallel workers did not repeat each other
    assert len({r["optimizers.opt.lr"] for r in table}) == 4


def test_the_value_is_the_mean_over_seeds_and_best_is_the_best(two_workers):
    _, out, result = two_workers
    table = rows(out)
    for r in table:
        seeds = [float(r["seed_0"]), float(r["seed_1"])]
        assert float(r["value"]) == pytest.approx(sum(seeds) / 2)
        assert float(r["std"]) == pytest.approx(abs(seeds[0] - seeds[1]) / 2**0.5)
    best = min(table, key=lambda r: float(r["value"]))
    record = info(out)["best"]
    assert record["number"] == int(best["number"]) == result.best["number"]
    assert record["values"] == {"0": float(best["seed_0"]), "1": float(best["seed_1"])}
    assert record["run_dirs"] == [f"trials/{record['number']:04d}/seed-0", f"trials/{record['number']:04d}/seed-1"]
    # the per-seed value is the run's own best of the monitor (run.json), not something else
    import json

    for s, rel in zip((0, 1), record["run_dirs"], strict=True):
        run_best = json.loads((out / rel / "run.json").read_text())["best"]
        assert run_best["metric"] == "loss" and run_best["value"] == record["values"][str(s)]


def test_best_yaml_trains_as_is_to_the_best_trials_value(two_workers, tmp_path):
    import onlytorch

    _, out, _ = two_workers
    text = (out / "best.yaml").read_text()
    best = info(out)["best"]
    assert f"trial {best['number']}" in text and "optimizers.opt.lr=" in text
    result = onlytorch.fit(out / "best.yaml", tmp_path / "again", seed=0)
    assert result.status == "completed"
    # the same spec and seed as the best trial's seed-0 run: the same best value, bit for bit
    assert result.best["value"] == best["values"]["0"]


def test_rerunning_a_finished_sweep_does_nothing(two_workers):
    file, out, _ = two_workers
    before = (out / "trials.csv").read_text()
    again = sweeping.run(file, out, workers=2)
    assert again.status == "completed" and again.exit_code == 0
    assert (out / "trials.csv").read_text() == before
    assert len(run_dirs(out)) == 8


def test_another_sweep_into_the_same_directory_is_refused(two_workers, tmp_path):
    _, out, _ = two_workers
    other = write_sweep(tmp_path, SPACE.replace("[4, 8]", "[4, 16]"))
    with pytest.raises(sweeping.SweepRefused, match=r"another sweep.*params") as e:
        sweeping.run(other, out)
    assert e.value.exit_code == 2
    assert info(out)["sweep_file"] != str(other)


def test_a_folder_that_is_not_a_sweeps_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    file = write_sweep(tmp_path, SPACE)
    with pytest.raises(sweeping.SweepRefused, match="holds no sweep"):
        sweeping.run(file, tmp_path / "out", executor="inline")


def test_raising_trials_continues_the_study(tmp_path):
    file = write_sweep(tmp_path, SPACE.replace("trials: 4", "trials: 2").replace("[0, 1]", "[0]"))
    out = tmp_path / "sw"
    first = sweeping.run(file, out, executor="inline")
    assert first.counts["complete"] == 2
    kept = rows(out)
    write_sweep(tmp_path, SPACE.replace("trials: 4", "trials: 3").replace("[0, 1]", "[0]"))
    more = sweeping.run(file, out, executor="inline")
    assert more.status == "completed" and more.counts["complete"] == 3
    table = rows(out)
    assert table[:2] == kept  # the first two trials are kept as they were
    assert info(out)["trials_requested"] == 3 and len(run_dirs(out)) == 3


def test_one_worker_with_fixed_seeds_gives_identical_sweeps(tmp_path):
    file = write_sweep(tmp_path, SPACE.replace("trials: 4", "trials: 3").replace("[0, 1]", "[0]"))
    # one worker process, then the same worker loop in this process: the same trials, bit for bit
    a = sweeping.run(file, tmp_path / "a", workers=1)
    b = sweeping.run(file, tmp_path / "b", executor="inline")
    assert a.status == b.status == "completed"

    def without_time(sweep_dir):
        return [{k: v for k, v in r.items() if k != "duration_s"} for r in rows(sweep_dir)]

    assert without_time(tmp_path / "a") == without_time(tmp_path / "b")
    assert len({r["optimizers.opt.lr"] for r in rows(tmp_path / "a")}) == 3  # three configurations, not one


def test_an_invalid_combination_is_a_failed_trial_and_the_sweep_still_completes(tmp_path):
    # [3] fits the schema but not the data (x has 2 features): only compiling the trial's spec tells
    file = write_sweep(
        tmp_path,
        """\
        trials: 3
        max_failures: 20
        sampler: {type: random, seed: 1}
        space:
          inputs.x.shape: {choice: [[2], [3]]}
        """,
    )
    result = sweeping.run(file, tmp_path / "sw", executor="inline")
    assert result.status == "completed" and result.exit_code == 0
    table = rows(tmp_path / "sw")
    failed = [r for r in table if r["state"] == "failed"]
    assert sum(r["state"] == "complete" for r in table) == 3 and failed
    for r in failed:
        assert r["inputs.x.shape"] == "[3]"
        assert r["error"].startswith("invalid trial spec:") and "xor.yaml" in r["error"] and "E-" in r["error"]
    assert info(tmp_path / "sw")["counts"]["failed"] == len(failed)


def test_a_diverged_trial_is_failed_naming_the_node_and_step(tmp_path):
    (tmp_path / "blowup.yaml").write_text(BLOWUP)
    (tmp_path / "s.yaml").write_text(
        "version: 1\nspec: blowup.yaml\ntrials: 2\nmax_failures: 10\nsampler: {type: random, seed: 3}\n"
        "space:\n  optimizers.opt.lr: {choice: [0.01, 1.0e+30]}\n"
    )
    result = sweeping.run(tmp_path / "s.yaml", tmp_path / "sw", executor="inline")
    assert result.status == "completed"
    failed = [r for r in rows(tmp_path / "sw") if r["state"] == "failed"]
    assert failed, "the sampler never drew the huge learning rate"
    for r in failed:
        assert r["optimizers.opt.lr"] == "1e+30"
        assert "diverged" in r["error"] and "step" in r["error"] and "'loss'" in r["error"]


def test_too_many_failures_end_the_sweep_failed(tmp_path):
    file = write_sweep(
        tmp_path,
        """\
        trials: 3
        max_failures: 2
        sampler: {type: random, seed: 0}
        space:
          inputs.x.shape: {choice: [[3], [4]]}
        """,
    )
    result = sweeping.run(file, tmp_path / "sw", executor="inline")
    assert result.status == "failed" and result.exit_code == 1
    assert "max_failures 2" in (result.message or "")
    assert info(tmp_path / "sw")["status"] == "failed" and result.counts["failed"] == 2


def test_a_seed_study_gives_mean_and_std_over_its_seeds(tmp_path):
    import statistics

    file = write_sweep(tmp_path, "seeds: 3\n")
    # the library entry: onlytorch.sweep.run, imported lazily by the package
    import onlytorch.sweep

    result = onlytorch.sweep.run(file, tmp_path / "sw", executor="inline")
    assert isinstance(result, onlytorch.sweep.SweepResult)
    assert result.status == "completed"
    (row,) = rows(tmp_path / "sw")
    values = [float(row[f"seed_{s}"]) for s in range(3)]
    assert len(set(values)) == 3  # three different seeds, three different runs
    assert float(row["value"]) == pytest.approx(statistics.fmean(values))
    assert float(row["std"]) == pytest.approx(statistics.stdev(values))
    best = info(tmp_path / "sw")["best"]
    assert best["seeds"] == [0, 1, 2] and best["std"] == pytest.approx(statistics.stdev(values))


def test_the_median_pruner_prunes_clearly_bad_trials(tmp_path):
    # a learning rate of 1e-6 leaves the loss where it starts: worse than the median at every evaluation
    file = write_sweep(
        tmp_path,
        """\
        trials: 6
        sampler: {type: random, seed: 0}
        pruner: {type: median, startup_trials: 1, warmup_steps: 0}
        space:
          optimizers.opt.lr: {choice: [0.1, 1.0e-6]}
        """,
        steps=60,
    )
    result = sweeping.run(file, tmp_path / "sw", executor="inline")
    assert result.status == "completed" and result.counts["complete"] + result.counts["pruned"] == 6
    table = rows(tmp_path / "sw")
    pruned = [r for r in table if r["state"] == "pruned"]
    assert pruned and all(r["optimizers.opt.lr"] == "1e-06" for r in pruned)
    # a pruned run stopped before its last step
    import json

    for r in pruned:
        run = json.loads((tmp_path / "sw" / f"trials/{int(r['number']):04d}/seed-0/run.json").read_text())
        assert run["steps_done"] < 60
    assert all(r["optimizers.opt.lr"] == "0.1" for r in table if r["state"] == "complete")


def test_objective_final_on_a_val_monitor_reads_the_monitored_split(tmp_path):
    # with a val split the monitor watches val/loss, which on_eval's values (eval.split's) do not hold
    import json

    from onlytorch.sweep.study import open_study

    file = write_sweep(
        tmp_path,
        """\
        objective: final
        seeds: [0, 1]
        """,
    )
    text = file.read_text().replace("set:\n", "set:\n  data.val: {source: synthetic.xor, n: 32, noise: 0.05}\n")
    file.write_text(text)
    result = sweeping.run(file, tmp_path / "sw", executor="inline")
    assert result.status == "completed"
    record = info(tmp_path / "sw")
    assert record["split"] == "val" and record["objective"] == "final"
    (trial,) = open_study(tmp_path / "sw").trials
    for index, seed in enumerate((0, 1)):
        log = tmp_path / "sw" / record["best"]["run_dirs"][index] / "metrics.jsonl"
        evals = [r for r in map(json.loads, log.read_text().splitlines()) if r["kind"] == "eval"]
        # every evaluation of val/loss reached the pruner, at steps offset by the seed's position
        assert {30 * index + r["step"]: r["val/loss"] for r in evals} == {
            k: v for k, v in trial.intermediate_values.items() if 30 * index < k <= 30 * (index + 1)
        }
        assert record["best"]["values"][str(seed)] == evals[-1]["val/loss"] != evals[-1]["eval/loss"]


def test_a_trial_asked_beyond_n_by_another_machine_steps_back():
    # two machines share an RDB study; each holds only its own directory lock, so both may ask the
    # last trial: the later one is failed as surplus, not run, not counted as a failure
    import optuna

    from onlytorch.sweep.record import count
    from onlytorch.sweep.worker import _surplus

    study = optuna.create_study()
    done = study.ask()
    study.tell(done, 1.0)
    other_machine = study.ask()  # the last of 2, asked elsewhere a moment earlier
    mine = study.ask()
    assert not _surplus(study, other_machine, 2)
    assert _surplus(study, mine, 2)
    frozen = study.trials[mine.number]
    assert frozen.state.name == "FAIL" and frozen.user_attrs["error"].startswith("surplus")
    c = count(study.get_trials(deepcopy=False))
    assert (c.complete, c.running, c.failed, c.surplus) == (1, 1, 0, 1)


def test_the_grid_sampler_visits_each_point_once(tmp_path):
    file = write_sweep(
        tmp_path,
        """\
        sampler: {type: grid}
        space:
          modules.net.0.linear: {choice: [2, 4, 8]}
          data.batch_size: {int: [16, 32], step: 16}
        """,
        steps=20,
    )
    result = sweeping.run(file, tmp_path / "sw", executor="inline")
    assert result.status == "completed" and result.counts["complete"] == 6
    points = sorted((int(r["modules.net.0.linear"]), int(r["data.batch_size"])) for r in rows(tmp_path / "sw"))
    assert points == [(w, b) for w in (2, 4, 8) for b in (16, 32)]


def test_a_changed_base_spec_is_refused_by_the_running_sweep(tmp_path):
    from .engine_helpers import XOR

    spec = tmp_path / "xor.yaml"
    spec.write_text(XOR.read_text())
    file = tmp_path / "s.yaml"
    file.write_text(
        "version: 1\nspec: xor.yaml\nset: {train.steps: 20}\ntrials: 1\n"
        "space:\n  optimizers.opt.lr: {loguniform: [0.001, 0.1]}\n"
    )
    assert sweeping.run(file, tmp_path / "sw", executor="inline").status == "completed"
    assert len(info(tmp_path / "sw")["spec_hash"]) == 16
    # a comment does not change the spec; raising trials continues
    spec.write_text("# tuned\n" + XOR.read_text())
    file.write_text(file.read_text().replace("trials: 1", "trials: 2"))
    assert sweeping.run(file, tmp_path / "sw", executor="inline").counts["complete"] == 2
    # another width does: trials of two specs must not mix in one study
    spec.write_text(XOR.read_text().replace("{linear: 8}", "{linear: 16}"))
    with pytest.raises(sweeping.SweepRefused, match=r"base spec .* changed"):
        sweeping.run(file, tmp_path / "sw", executor="inline")


def test_importing_onlytorch_and_its_sweep_package_imports_no_optuna():
    import subprocess
    import sys

    code = (
        "import sys, onlytorch, onlytorch.sweep\n"
        "heavy = sorted(m for m in ('optuna', 'ray', 'onlytorch.sweep.runner') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "assert callable(onlytorch.sweep.run) and issubclass(onlytorch.sweep.SweepRefused, onlytorch.sweep.SweepError)\n"
        "assert 'optuna' not in sys.modules  # the runner imports optuna only when a sweep runs\n"
        "try:\n"
        "    onlytorch.sweep.nothing\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
