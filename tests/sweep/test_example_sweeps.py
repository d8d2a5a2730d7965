"""The example sweeps in sweeps/*.yaml: each loads without a diagnostic, states its command and
result in its header, and runs for real at reduced size (fewer trials or seeds, fewer steps, the
same space, sampler, pruner and objective), so that what its header claims is produced by the
sweep as written and not by a variant of it."""

from __future__ import annotations

import csv
import json
import math
import pathlib
import statistics

import pytest
import yaml

pytest.importorskip("optuna")

from onlytorch.sweep.load import load_sweep

ROOT = pathlib.Path(__file__).resolve().parents[2]
SWEEPS = ROOT / "sweeps"
EXAMPLES = sorted(SWEEPS.glob("*.yaml"))


def test_the_issue_s_example_sweeps_are_there():
    names = {p.name for p in EXAMPLES}
    assert {"gan_ring.yaml", "ppo_seeds.yaml"} <= names, names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_sweep_loads_without_diagnostics(path):
    sweep, report = load_sweep(path)
    assert sweep is not None, report.render()
    assert not report.items, report.render()  # not even a warning
    assert sweep.spec.is_file() and sweep.spec.parent == ROOT / "specs"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_sweep_header_states_its_command_and_result(path):
    header = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert f"onlytorch sweep sweeps/{path.name}" in text, f"{path.name}: the header names no command"
    assert f"onlytorch report sweeps/{path.stem}" in text, f"{path.name}: the header names no report command"
    assert "Measured" in text, f"{path.name}: the header states no measured result"


def _shortened(name, tmp_path, **changes):
    """A copy of sweeps/NAME.yaml in tmp_path with ``changes`` applied (``set`` entries merged into
    the example's own), its base spec named by an absolute path."""
    data = yaml.safe_load((SWEEPS / f"{name}.yaml").read_text(encoding="utf-8"))
    data["spec"] = str((SWEEPS / data["spec"]).resolve())
    fixed = {**data.get("set", {}), **changes.pop("set", {})}
    if fixed:
        data["set"] = fixed
    data.update(changes)
    copy = tmp_path / f"{name}.yaml"
    copy.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return copy, data


def _run(copy, out):
    import onlytorch.sweep.runner as sweep_run

    result = sweep_run.run(copy, out, workers=1)
    info = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    with open(out / "trials.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return result, info, rows


def _run_json(out, rel):
    return json.loads((out / rel / "run.json").read_text(encoding="utf-8"))


def test_gan_ring_sweep_shortened_finishes_its_trials_within_its_space(tmp_path):
    """sweeps/gan_ring.yaml with 4 trials of 120 iterations (evaluated every 20, on 500 samples): every
    trial is complete or pruned (none failed: each sampled combination is a valid spec), each
    sampled value lies in the example's space, each run trained with exactly those values, and
    best.yaml is the base spec with the best trial's values."""
    steps = 120
    copy, data = _shortened(
        "gan_ring",
        tmp_path,
        trials=4,
        set={
            "train.steps": steps,
            "train.eval_every": 20,
            "train.log_every": 20,
            "optimizers.d_opt.schedule.T_max": steps,
            "optimizers.g_opt.schedule.T_max": steps,
            "eval.samples.n": 500,
        },
    )
    # the example's pruner, with its startup and warmup scaled to 4 trials of 120 steps
    data["pruner"].update(startup_trials=1, warmup_steps=20)
    copy.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    space = data["space"]
    assert len(space) >= 4  # the example's space, not a reduced one
    out = tmp_path / "sweep"
    result, info, rows = _run(copy, out)
    assert result.exit_code == 0, result.message
    assert info["status"] == "completed" and info["counts"]["failed"] == 0
    assert len(rows) == 4 and {r["state"] for r in rows} <= {"complete", "pruned"}, rows
    assert info["counts"]["complete"] + info["counts"]["pruned"] == 4
    for row in rows:
        for path, dist in space.items():
            raw = json.loads(row[path])  # trials.csv: numbers as written, lists as JSON
            if "loguniform" in dist:
                low, high = dist["loguniform"]
                assert low <= raw <= high, (path, raw)
            else:
                assert raw in dist["choice"], (path, raw)
        run = _run_json(out, f"trials/{int(row['number']):04d}/seed-0")
        lr = next(o for o in run["overrides"] if o.startswith("optimizers.d_opt.lr="))
        assert math.isclose(float(lr.split("=", 1)[1]), float(row["optimizers.d_opt.lr"]), rel_tol=1e-9)
        if row["state"] == "complete":
            assert run["status"] == "completed" and run["steps_done"] == steps
            modes = float(row["value"])
            assert modes == run["final"]["eval/modes_covered"] and 0 <= modes <= 8  # objective: final
        else:
            assert run["steps_done"] < steps
    best = info["best"]
    assert best is not None and best["value"] == max(float(r["value"]) for r in rows if r["state"] == "complete")
    best_spec = yaml.safe_load((out / "best.yaml").read_text(encoding="utf-8"))
    assert best_spec["optimizers"]["g_opt"]["lr"] == pytest.approx(best["params"]["optimizers.g_opt.lr"])
    assert best_spec["train"]["steps"] == steps


def test_ppo_seed_study_shortened_gives_mean_and_std_over_its_seeds(tmp_path):
    """sweeps/ppo_seeds.yaml over 3 seeds of 6 PPO iterations: one trial, one run per seed, its
    value the mean of the seeds' final greedy evaluation returns (each as the run's run.json
    records it, within CartPole-v1's 1..500) and its std their sample standard deviation."""
    pytest.importorskip("gymnasium")
    copy, data = _shortened("ppo_seeds", tmp_path, seeds=3, set={"train.steps": 6, "train.eval_every": 3})
    assert not data.get("space")
    out = tmp_path / "sweep"
    result, info, rows = _run(copy, out)
    assert result.exit_code == 0, result.message
    assert info["counts"]["complete"] == 1 and len(rows) == 1
    best = info["best"]
    assert sorted(best["values"]) == ["0", "1", "2"]
    finals = []
    for seed, rel in zip([0, 1, 2], best["run_dirs"], strict=True):
        run = _run_json(out, rel)
        assert run["seed"] == seed and run["status"] == "completed"
        finals.append(run["final"]["eval/return_mean"])  # the final 20 greedy episodes
        assert best["values"][str(seed)] == finals[-1]
    assert all(1 <= v <= 500 for v in finals), finals
    assert best["value"] == pytest.approx(statistics.fmean(finals))
    assert best["std"] == pytest.approx(statistics.stdev(finals))
    assert float(rows[0]["value"]) == pytest.approx(best["value"])
