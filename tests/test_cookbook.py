"""docs/cookbook.md: each recipe (a ``## `` section) is a short explanation and ONE complete spec in
a ```yaml block. Every spec validates through the command line with no error and no warning (a
recipe may expect a warning only by saying so: "validates with the warning `W-CODE`"), and is
trained for a few steps with ``onlytorch train`` in a temporary folder, each with a check that
fails when the recipe does not do what its text says: a loss that goes down, a frozen backbone
that stays at its initial values, a target network that moves by Polyak averaging, a teacher that
is the teacher run's, accumulated micro-batches that take the step of one large batch."""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
import re
from typing import Any, NamedTuple

import numpy as np
import pytest
from click.testing import CliRunner
from onlytorch_cli.main import cli

from onlytorch.compile import compile_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cookbook.md"

# every recipe the cookbook promises, by its spec's name
NAMES = (
    "cookbook-vae",
    "cookbook-distill",
    "cookbook-accumulate",
    "cookbook-freeze",
    "cookbook-wgan-gp",
    "cookbook-target-network",
    "cookbook-tbptt",
    "cookbook-cgan",
)
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)
EXPECTED_WARNING = re.compile(r"validates with the warning `(W-[A-Z-]+)`")


class Recipe(NamedTuple):
    title: str
    prose: str  # the section without its yaml block
    spec: str  # the yaml block


def recipes() -> dict[str, Recipe]:
    """The recipes of docs/cookbook.md by spec name; each ``## `` section holds one yaml block or none."""
    out: dict[str, Recipe] = {}
    for section in re.split(r"^## ", DOC.read_text(encoding="utf-8"), flags=re.M)[1:]:
        title = section.splitlines()[0]
        blocks = YAML_BLOCK.findall(section)
        assert len(blocks) <= 1, f"recipe {title!r} has {len(blocks)} yaml blocks: one spec per recipe"
        if blocks:
            name = re.search(r"^name: (\S+)$", blocks[0], re.M)
            assert name, f"recipe {title!r}: its spec has no name"
            assert name.group(1) not in out, f"two recipes are called {name.group(1)}"
            out[name.group(1)] = Recipe(title, YAML_BLOCK.sub("", section), blocks[0])
    return out


RECIPES = recipes()


def run_cli(*args: Any) -> Any:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 0, result.output
    return result


def write(name: str, folder: pathlib.Path) -> pathlib.Path:
    path = folder / f"{name}.yaml"
    path.write_text(RECIPES[name].spec, encoding="utf-8")
    return path


def needs(name: str) -> None:
    """Skip a recipe whose data needs an extra that is not installed."""
    spec = RECIPES[name].spec
    if "source: sklearn." in spec:
        pytest.importorskip("sklearn", reason=f"{name} reads a scikit-learn bundled set")
    if "source: gym." in spec:
        pytest.importorskip("gymnasium", reason=f"{name} runs a gymnasium environment")


def train(spec: pathlib.Path, out: pathlib.Path, *sets: str) -> dict[str, Any]:
    """``onlytorch train`` with --set overrides; run.json, which must say completed."""
    overrides = [a for s in sets for a in ("--set", s)]
    run_cli("train", spec, "--out", out, "-q", "--no-tensorboard", *overrides)
    info = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert info["status"] == "completed", info
    return info


def rows(run: pathlib.Path, kind: str = "train") -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def all_finite(table: list[dict[str, Any]]) -> bool:
    return all(math.isfinite(v) for r in table for k, v in r.items() if isinstance(v, float))


def checkpoint(path: pathlib.Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def initial_parameters(spec: pathlib.Path) -> dict[str, np.ndarray]:
    """The parameters a run of the spec starts from (its seed's initialisation)."""
    compiled, report = compile_file(spec)
    assert compiled is not None, report
    g = compiled.graph
    return {p.name: np.array(g.get_node_value(p)) for p in g.parameters()}


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A folder holding runs/digits_teacher, the teacher the distillation recipe's init: names
    (relative to the spec's folder), trained from specs/digits_teacher.yaml at reduced length."""
    pytest.importorskip("sklearn", reason="the teacher reads scikit-learn's digits")
    folder = tmp_path_factory.mktemp("cookbook")
    train(ROOT / "specs" / "digits_teacher.yaml", folder / "runs" / "digits_teacher", "train.steps=100")
    return folder


def folder_for(name: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> pathlib.Path:
    return request.getfixturevalue("teacher_folder") if name == "cookbook-distill" else tmp_path


# ------------------------------------------------------------------ the page


def test_the_cookbook_has_every_recipe_each_one_spec() -> None:
    assert sorted(RECIPES) == sorted(NAMES)
    blocks = YAML_BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == len(NAMES), "every yaml block of the page is a recipe's spec"
    for recipe in RECIPES.values():
        assert len(recipe.prose.split()) >= 40, f"recipe {recipe.title!r} needs its explanation"


def test_the_cookbook_links_resolve() -> None:
    """The table's #anchors are headings of the page (GitHub's slugs); relative links name files."""
    text = DOC.read_text(encoding="utf-8")
    slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.*)$", text, re.M)}
    anchors = re.findall(r"\]\(#([^)]+)\)", text)
    assert len(anchors) == len(NAMES) and set(anchors) <= slugs, sorted(set(anchors) - slugs)
    for target in re.findall(r"\]\((?!#|https?:)([^)#]+)\)", text):
        assert (DOC.parent / target).exists(), target


def test_spec_md_links_the_cookbook() -> None:
    assert "(cookbook.md)" in (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", NAMES)
def test_recipe_validates_without_a_warning_it_does_not_explain(
    name: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> None:
    needs(name)
    spec = write(name, folder_for(name, request, tmp_path))
    report = json.loads(run_cli("validate", spec, "--json").stdout)
    codes = [d["code"] for d in report["diagnostics"]]
    assert report["errors"] == 0, codes
    explained = set(EXPECTED_WARNING.findall(RECIPES[name].prose))
    assert set(codes) <= explained, f"{name}: warnings {codes}, the recipe explains {sorted(explained)}"


# ------------------------------------------------------------------ each recipe, trained briefly


def test_vae_learns_and_logs_the_kl_raw_beside_weighted(tmp_path: pathlib.Path) -> None:
    needs("cookbook-vae")
    spec = write("cookbook-vae", tmp_path)
    info = train(spec, tmp_path / "run", "train.steps=60", "train.log_every=10")
    log = rows(tmp_path / "run")
    assert all_finite(log)
    assert log[-1]["elbo/recon"] < 0.8 * log[0]["elbo/recon"], [r["elbo/recon"] for r in log]
    # the KL weight ramps from 0 to 1 over 500 iterations: every row's weighted value is below the raw one
    assert all(0 <= r["elbo/kl:weighted"] < r["elbo/kl"] for r in log)
    final = info["final"]  # the evaluation's neg_elbo is recon + kl with the weight 1
    assert final["eval/neg_elbo"] == pytest.approx(final["eval/recon"] + final["eval/kl"], rel=1e-5)


def test_distillation_loads_the_teacher_run_and_never_changes_it(teacher_folder: pathlib.Path) -> None:
    needs("cookbook-distill")
    teacher_run = teacher_folder / "runs" / "digits_teacher"
    spec = write("cookbook-distill", teacher_folder)
    run = teacher_folder / "student"
    info = train(spec, run, "train.steps=40", "train.eval_every=20")
    best = teacher_run / "checkpoints" / "best.npz"
    (entry,) = info["init"]
    assert entry["sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    assert entry["modules"] == {"teacher": "teacher"}
    loaded, after = checkpoint(best), checkpoint(run / "checkpoints" / "last.npz")
    teacher_keys = [k for k in loaded if k.startswith("param/teacher.")]
    assert len(teacher_keys) == 6
    for key in teacher_keys:  # no optimizer steps the teacher: bit for bit as loaded
        assert after[key].tobytes() == loaded[key].tobytes(), key
    # the loaded teacher scores on the test split what it scored in its own run (a random one: ~10%)
    taught = json.loads((teacher_run / "run.json").read_text(encoding="utf-8"))["final"]["eval/accuracy"]
    assert taught > 0.8
    assert info["final"]["eval/teacher_accuracy"] == pytest.approx(taught, abs=1.5 / 359)
    assert all_finite(rows(run))


def test_accumulated_micro_batches_take_the_step_of_one_large_batch(tmp_path: pathlib.Path) -> None:
    needs("cookbook-accumulate")
    spec = write("cookbook-accumulate", tmp_path)
    exact = ("dtype=float64", "train.steps=5")
    train(spec, tmp_path / "micro", *exact)  # as written: 4 micro-batches of 16 per step
    train(spec, tmp_path / "large", *exact, "data.batch_size=64", "train.schedule.fit.accumulate=1")
    micro, large = (
        checkpoint(tmp_path / "micro/checkpoints/last.npz"),
        checkpoint(tmp_path / "large/checkpoints/last.npz"),
    )
    params = [k for k in micro if k.startswith("param/")]
    assert len(params) == 6
    for key in params:
        np.testing.assert_allclose(micro[key], large[key], rtol=0, atol=1e-12, err_msg=key)
    assert not np.array_equal(micro["param/net.0.weight"], initial_parameters(spec)["net.0.weight"])


def test_freeze_keeps_the_backbone_at_its_start_until_the_switch(tmp_path: pathlib.Path) -> None:
    needs("cookbook-freeze")
    spec = write("cookbook-freeze", tmp_path)
    start = initial_parameters(spec)
    train(spec, tmp_path / "frozen", "train.steps=20")  # inside the frozen range only
    frozen = checkpoint(tmp_path / "frozen/checkpoints/last.npz")
    for name in ("backbone.0.weight", "backbone.0.bias", "backbone.2.weight", "backbone.2.bias"):
        assert frozen[f"param/{name}"].tobytes() == start[name].tobytes(), name
    assert not np.array_equal(frozen["param/head.0.weight"], start["head.0.weight"])
    switch = ("train.schedule.frozen.until=20", "train.schedule.finetune.start=20")
    train(spec, tmp_path / "both", "train.steps=30", "train.log_every=10", *switch)
    log = rows(tmp_path / "both")
    assert [sorted(k for k in r if k.endswith("/loss")) for r in log] == [["frozen/loss"]] * 2 + [["finetune/loss"]]
    assert ["grad_norm/backbone_opt" in r for r in log] == [False, False, True]
    both = checkpoint(tmp_path / "both/checkpoints/last.npz")
    assert not np.array_equal(both["param/backbone.0.weight"], start["backbone.0.weight"])


def test_wgan_gp_trains_with_finite_losses_and_scores_its_samples(tmp_path: pathlib.Path) -> None:
    spec = write("cookbook-wgan-gp", tmp_path)
    info = train(spec, tmp_path / "run", "train.steps=12", "train.log_every=4", "train.eval_every=6")
    log, evals = rows(tmp_path / "run"), rows(tmp_path / "run", "eval")
    assert all_finite(log) and len(log) == 3
    assert all(r["grad_norm/c_opt"] > 0 and r["grad_norm/g_opt"] > 0 for r in log)
    assert [r["step"] for r in evals] == [6, 12]
    assert all(0 <= r["eval/modes_covered"] <= 8 for r in evals)
    assert (info["best"]["metric"], info["best"]["split"]) == ("modes_covered", "samples")


def test_target_network_follows_q_by_polyak_averaging(tmp_path: pathlib.Path) -> None:
    needs("cookbook-target-network")
    spec = write("cookbook-target-network", tmp_path)
    start = initial_parameters(spec)
    info = train(spec, tmp_path / "run", "train.steps=1")
    after = checkpoint(tmp_path / "run/checkpoints/last.npz")
    q_names = [n for n in start if n.startswith("Q.")]
    assert len(q_names) == 6
    for name in q_names:  # one iteration: target = 0.05 Q + 0.95 (its start, which was Q's)
        target = after[f"param/Q_target.{name[2:]}"]
        q = after[f"param/{name}"]
        assert start[f"Q_target.{name[2:]}"].tobytes() == start[name].tobytes()
        np.testing.assert_allclose(target, 0.05 * q + 0.95 * start[name], rtol=0, atol=1e-6, err_msg=name)
        assert not np.allclose(target, q, rtol=0, atol=1e-4), f"{name}: the target should lag Q"
    assert all_finite(rows(tmp_path / "run")) and info["final"]["eval/return_mean"] >= 8


def test_tbptt_learns_and_carries_the_state_across_windows(tmp_path: pathlib.Path) -> None:
    spec = write("cookbook-tbptt", tmp_path)
    info = train(spec, tmp_path / "run", "train.steps=32", "train.log_every=8")
    log = rows(tmp_path / "run")
    assert log[-1]["fit/loss"] < 0.5 * log[0]["fit/loss"], [r["fit/loss"] for r in log]
    assert math.isfinite(info["final"]["eval/loss"])
    state = checkpoint(tmp_path / "run/checkpoints/last.npz")
    assert int(state["meta/window"]) == 32 % 5  # 100 steps in windows of 20: five iterations per batch
    assert state["carry/h0"].shape == (32, 16) and np.abs(state["carry/h0"]).max() > 0


def test_conditional_gan_draws_samples_per_asked_mode(tmp_path: pathlib.Path) -> None:
    spec = write("cookbook-cgan", tmp_path)
    info = train(spec, tmp_path / "run", "train.steps=20", "train.log_every=10", "train.eval_every=10")
    assert all_finite(rows(tmp_path / "run"))
    assert (info["best"]["metric"], info["best"]["split"], info["best"]["mode"]) == ("off_centre", "val", "min")
    samples = checkpoint(tmp_path / "run/samples.npz")
    assert samples["fake"].shape == (800, 2) and np.isfinite(samples["fake"]).all()
    assert samples["field/mode"].shape == (800,) and set(samples["field/mode"].tolist()) == set(range(8))
