"""``onlytorch train`` end to end: every example spec for a few steps, the run directory it writes
(run.json, metrics.jsonl and .csv, the resolved spec, checkpoints, GAN samples), what it prints,
run-directory naming, and reproducibility under --seed."""

from __future__ import annotations

import csv
import hashlib
import json
import pathlib
import re
import stat

import numpy as np
import pytest
import yaml

import onlytorch
from onlytorch.compile import compile_file
from onlytorch.run import spec_hash
from onlytorch.train import Trainer

from . import assert_same_state, checkpoint, fails, info, ok, rows, spec, without_time

# name -> overrides that keep the run short (a few steps, small data)
SHORT = {
    "xor": ["train.steps=20", "data.train.n=64"],
    "digits": ["train.steps=10"],
    "gan_ring": ["train.steps=10"],
    "wgan_gp": ["train.steps=3", "data.train.n=1024"],
    "wgan_gp_grid": ["train.steps=3", "data.train.n=1024"],
    "multitask": ["train.steps=10", "data.train.n=256"],
    "tbptt_sine": ["train.steps=12", "data.train.n=64"],
}
GANS = ("gan_ring", "wgan_gp", "wgan_gp_grid")
# name -> what chooses best.npz: (metric, split, mode); the GANs and digits declare train.monitor
BEST = {
    "xor": ("loss", "test", "min"),
    "digits": ("accuracy", "test", "max"),
    "gan_ring": ("modes_covered", "samples", "max"),
    "wgan_gp": ("modes_covered", "samples", "max"),
    "wgan_gp_grid": ("modes_covered", "samples", "max"),
    "multitask": ("cls_loss", "test", "min"),
    "tbptt_sine": ("loss", "test", "min"),
}


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def expected_keys(raw: dict) -> tuple[set[str], set[str]]:
    """The keys a train row and an eval row must hold, read from the spec itself."""
    train = {"time"} | {f"lr/{o}" for o in raw["optimizers"]}
    for phase in raw["train"]["schedule"]:
        train |= {f"{phase['name']}/{b['loss']}" for b in phase["backward"]}
        train |= {f"grad_norm/{o}" for o in phase["step"]}
    names = raw["eval"].get("metrics") or list(raw.get("metrics", {}))
    ev = {f"eval/{m}" for m in names}
    if "samples" in raw["eval"]:
        ev |= {"eval/modes_covered", "eval/high_quality"}
    return train, ev


@pytest.mark.parametrize("name", sorted(SHORT))
def test_train_each_example_writes_a_complete_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = SHORT[name]
    steps = int(overrides[0].split("=")[1])
    result = ok("train", spec(name), "--out", "run", *sets(overrides))
    run = tmp_path / "run"
    raw = yaml.safe_load(pathlib.Path(spec(name)).read_text())

    files = [
        "spec.yaml",
        "spec.json",
        "run.json",
        "metrics.jsonl",
        "metrics.csv",
        "checkpoints/last.npz",
        "checkpoints/best.npz",
    ]
    files += ["samples.npz"] if name in GANS else []
    for f in files:
        assert (run / f).is_file(), f
    assert not list(run.rglob("*.tmp")), "temporary files left behind"

    # run.json: the summary
    summary = info(run)
    assert summary["status"] == "completed" and summary["message"] is None
    assert summary["steps_done"] == summary["total_steps"] == steps
    assert summary["seed"] == raw["seed"] and summary["name"] == raw["name"]
    assert summary["overrides"] == overrides
    assert summary["versions"] == {
        "python": summary["versions"]["python"],
        "numpy": np.__version__,
        "onlytorch": onlytorch.__version__,
    }
    assert re.fullmatch(r"[0-9a-f]{16}", summary["spec_hash"])
    resolved = json.loads((run / "spec.json").read_text())
    assert summary["spec_hash"] == spec_hash(resolved)
    assert str(checkpoint(run / "checkpoints/last.npz")["meta/spec_hash"]) == summary["spec_hash"]
    assert summary["finished"] and summary["wall_time"] > 0

    # metrics.jsonl: train rows with every phase's losses, lr, grad norms, time; eval rows
    log = rows(run)
    train_keys, eval_keys = expected_keys(raw)
    train_rows = [r for r in log if r["kind"] == "train"]
    eval_rows = [r for r in log if r["kind"] == "eval"]
    assert train_rows and eval_rows
    assert [r["step"] for r in train_rows] == sorted({r["step"] for r in train_rows})
    assert train_rows[-1]["step"] == steps
    for r in train_rows:
        assert train_keys <= set(r), train_keys - set(r)
        assert all(np.isfinite(r[k]) for k in train_keys)
        assert all(r[f"grad_norm/{o}"] > 0 for o in raw["optimizers"])
    for r in eval_rows:
        assert set(r) == {"step", "kind"} | eval_keys
    assert len({(r["step"], r["kind"]) for r in log}) == len(log), "a step logged twice"
    assert eval_rows[-1]["step"] == steps

    # final metrics: the last value of every logged key
    final = summary["final"]
    for k in train_keys - {"time"}:
        assert final[k] == train_rows[-1][k]
    for k in eval_keys:
        assert final[k] == eval_rows[-1][k]

    # the best checkpoint, by train.monitor (or its default, the first loss), on the split it names
    best = summary["best"]
    assert (run / best["checkpoint"]).is_file() and 1 <= best["step"] <= steps
    metric, split, mode = BEST[name]
    assert {k: best[k] for k in ("metric", "split", "mode")} == {"metric": metric, "split": split, "mode": mode}
    logged = [(r["step"], r[f"eval/{metric}"]) for r in eval_rows]
    assert (best["step"], best["value"]) == (min if mode == "min" else max)(logged, key=lambda p: p[1])

    # metrics.csv holds the same rows
    with open(run / "metrics.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(log)
    for row, line in zip(log, table):
        for k, v in line.items():
            if k == "kind":
                assert v == row["kind"]
            elif v == "":
                assert k not in row
            else:
                assert float(v) == row[k], (k, v, row[k])

    # the resolved spec holds the overrides
    resolved_yaml = yaml.safe_load((run / "spec.yaml").read_text())
    assert resolved_yaml == resolved
    for o in overrides:
        key, value = o.split("=")
        node = resolved_yaml
        for part in key.split("."):
            node = node[part]
        assert node == yaml.safe_load(value)
    # and compiles again as it is: a run directory's spec.yaml is a spec (defaults written out included)
    ok("validate", run / "spec.yaml")

    # what it prints: a progress log (not a terminal: log lines), then the metric tables
    assert f"training, {steps} steps -> run" in result.output
    assert f"step {steps}/{steps}" in result.output
    assert f"final training losses (step {steps})" in result.output
    assert f"evaluation on {raw['eval'].get('split', 'test')} (no_grad)" in result.output
    some_loss = next(iter(k for k in train_keys if "/" in k and not k.startswith(("lr/", "grad_norm/"))))
    assert re.search(rf"^{re.escape(some_loss)}\s+\S+$", result.output, re.M)
    assert "run directory: run" in result.output


def test_gan_ring_writes_samples_and_mode_coverage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok("train", spec("gan_ring"), "--out", "run", "--set", "train.steps=10", "-q")
    with np.load(tmp_path / "run/samples.npz", allow_pickle=False) as s:
        assert set(s.files) == {"fake", "real", "centres"}
        fake, real, centres = s["fake"], s["real"], s["centres"]
    assert fake.shape == (2500, 2) and np.isfinite(fake).all()
    assert real.shape == (2500, 2)
    assert centres.shape == (8, 2) and np.allclose(np.linalg.norm(centres, axis=1), 2.0)
    # the real samples are the ring: near a centre each
    assert np.min(np.linalg.norm(real[:, None] - centres[None], axis=2), axis=1).max() < 0.2
    ev = [r for r in rows(tmp_path / "run") if r["kind"] == "eval"]
    assert 0 <= ev[-1]["eval/modes_covered"] <= 8 and 0 <= ev[-1]["eval/high_quality"] <= 1


def test_quiet_prints_no_progress_but_the_tables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = ok("train", spec("xor"), "--out", "run", "--set", "train.steps=20", "-q")
    assert "step 20/20" not in result.output and "training, 20 steps" not in result.output
    assert "final training losses (step 20)" in result.output and "evaluation on test" in result.output


def digest(folder: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_default_run_directory_is_numbered_and_nothing_is_overwritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = ok("train", spec("xor"), "--set", "train.steps=10", "-q")
    assert "run directory: runs/xor " in first.output
    before = digest(tmp_path / "runs/xor")
    second = ok("train", spec("xor"), "--set", "train.steps=10", "--seed", "1", "-q")
    assert "run directory: runs/xor-2 " in second.output
    ok("train", spec("xor"), "--set", "train.steps=10", "-q")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["xor", "xor-2", "xor-3"]
    assert digest(tmp_path / "runs/xor") == before
    assert info(tmp_path / "runs/xor-2")["seed"] == 1


def test_an_existing_run_is_refused_and_left_untouched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok("train", spec("xor"), "--out", "run", "--set", "train.steps=10", "-q")
    before = digest(tmp_path / "run")
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}
    result = fails(2, "train", spec("xor"), "--out", "run", "--set", "train.steps=30")
    assert "already holds a run" in result.output and "--resume" in result.output
    assert digest(tmp_path / "run") == before
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")} == mtimes


def test_seed_option_is_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok("train", spec("xor"), "--out", "run", "--set", "train.steps=5", "--seed", "7", "-q")
    summary = info(tmp_path / "run")
    assert summary["seed"] == 7 and summary["overrides"] == ["train.steps=5", "seed=7"]
    assert yaml.safe_load((tmp_path / "run/spec.yaml").read_text())["seed"] == 7


def test_eval_every_evaluates_each_step_once(tmp_path, monkeypatch):
    # Caught a bug: with eval_every set and steps not a multiple of it, the last step was evaluated
    # twice (once by the loop, once more at the end), giving duplicate eval rows.
    monkeypatch.chdir(tmp_path)
    ok("train", spec("xor"), "--out", "run", "--set", "train.steps=25", "--set", "train.eval_every=10", "-q")
    assert [r["step"] for r in rows(tmp_path / "run") if r["kind"] == "eval"] == [10, 20, 25]
    ok("train", spec("xor"), "--out", "run2", "--set", "train.steps=20", "--set", "train.eval_every=10", "-q")
    assert [r["step"] for r in rows(tmp_path / "run2") if r["kind"] == "eval"] == [10, 20]


def test_checkpoint_every_and_file_permissions(tmp_path, monkeypatch):
    # Caught a bug: checkpoints were left with mkstemp's mode 0600 while the rest of the run
    # directory follows the umask (a report served by another user could not read them).
    monkeypatch.chdir(tmp_path)
    ok("train", spec("xor"), "--out", "run", "--set", "train.steps=12", "--set", "train.checkpoint_every=5", "-q")
    assert int(checkpoint(tmp_path / "run/checkpoints/last.npz")["meta/step"]) == 12
    mode = stat.S_IMODE((tmp_path / "run/spec.yaml").stat().st_mode)
    for f in ("checkpoints/last.npz", "checkpoints/best.npz"):
        assert stat.S_IMODE((tmp_path / "run" / f).stat().st_mode) == mode


# ------------------------------------------------------------------ reproducibility


@pytest.mark.parametrize(
    "name, overrides", [("gan_ring", ["train.steps=8", "data.train.n=512"]), ("digits", ["train.steps=6"])]
)
def test_same_seed_gives_bit_identical_runs(name, overrides, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", spec(name), "-q", *sets(overrides), "--set", "train.log_every=1"]
    ok(*args, "--out", "a", "--seed", "3")
    ok(*args, "--out", "b", "--seed", "3")
    ok(*args, "--out", "c", "--seed", "4")
    assert_same_state(tmp_path / "a/checkpoints/last.npz", tmp_path / "b/checkpoints/last.npz")
    assert [without_time(r) for r in rows(tmp_path / "a")] == [without_time(r) for r in rows(tmp_path / "b")]
    if name in GANS:
        assert (tmp_path / "a/samples.npz").read_bytes() == (tmp_path / "b/samples.npz").read_bytes()
    a, c = checkpoint(tmp_path / "a/checkpoints/last.npz"), checkpoint(tmp_path / "c/checkpoints/last.npz")
    params = [k for k in a if k.startswith("param/")]
    assert params and all(not np.array_equal(a[k], c[k]) for k in params)
    assert any(not np.array_equal(a[k], c[k]) for k in a if k.startswith("opt/") and k.endswith("exp_avg"))
    assert [without_time(r) for r in rows(tmp_path / "a")] != [without_time(r) for r in rows(tmp_path / "c")]


def test_tbptt_carries_the_hidden_state_across_windows():
    # Caught a bug: the carried node (h_last = hs[:, -1]) is not an ancestor of the loss, so the
    # loss's forward never computed it, the trainer found no value to carry, and every window
    # started again from zeros: truncated BPTT without the state crossing windows.
    compiled, _ = compile_file(spec("tbptt_sine"), [("data.train.n", 64)])
    trainer = Trainer(compiled)
    g, h0 = compiled.graph, compiled.inputs["h0"]
    assert compiled.carries["h0"].name == "h_last"
    carried = None
    for step in range(12):  # 10 windows per sequence, then a new batch
        trainer.run_iteration()
        fed = g.get_node_value(h0)
        if step % 10 == 0:
            assert not fed.any(), "a new batch starts from zeros"
        else:
            assert fed.any() and np.array_equal(fed, carried)  # the previous window's last state
        carried = trainer.carry["h0"]
        assert carried is not None and carried.shape == (32, 32)
    assert "carry/h0" in trainer.state()
