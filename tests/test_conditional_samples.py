"""Conditional samples in evaluation (issue 12, item 8): ``eval.samples`` of a generator that reads
data fields (a class-conditional GAN's label) is fed the evaluated split's rows in order, cycled
from the first row when the split has fewer than ``eval.samples.n`` and cut when it has more, with
noise drawn as for an unconditional generator; samples.npz keeps the fields used; a sample node
that reads a field the evaluated split lacks is a located E-SAMPLES."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner
from onlytorch_cli.main import cli

from onlytorch import report
from onlytorch.compile import compile_text
from onlytorch.evaluation import evaluate
from onlytorch.train import Trainer

# A "generator" whose samples say which class they were asked for: 10 * one_hot(label) plus a
# small learned function of the noise; argmax(sample) is the condition, whatever the training did.
SPEC = """\
version: 1
name: cond
seed: 0
data:
  train: {source: synthetic.ring, n: 64, modes: 2}
  test: {source: synthetic.ring, n: 10, modes: 2}
  batch_size: 16
inputs:
  real: {shape: [2], from: train.x}
  c: {shape: [], dtype: int64, from: train.mode}
  z: {shape: [3], from: noise.normal}
modules:
  G: [{linear: 2}]
nodes:
  wiggle: 0.01 * G(z)
  fake: 10 * one_hot(c, 2) + wiggle
losses:
  loss: mse(G(z), real)
optimizers:
  opt: {type: adam, lr: 0.01, params: [G]}
train:
  steps: 3
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
eval:
  split: test
  samples: {node: fake, n: 25}
"""


def trained(text: str = SPEC) -> tuple[object, Trainer]:
    compiled, rep = compile_text(text)
    assert compiled is not None, rep.render() if hasattr(rep, "render") else rep
    trainer = Trainer(compiled)
    for _ in range(3):
        trainer.run_iteration()
    return compiled, trainer


def samples_file(tmp_path: pathlib.Path, text: str = SPEC) -> tuple[dict[str, np.ndarray], Trainer]:
    compiled, trainer = trained(text)
    evaluate(compiled, trainer, tmp_path)  # type: ignore[arg-type]
    with np.load(tmp_path / "samples.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}, trainer


@pytest.mark.parametrize("n", [25, 10, 4])  # more rows than the split (cycled), as many, fewer (cut)
def test_samples_follow_the_evaluated_splits_rows_in_order(tmp_path: pathlib.Path, n: int) -> None:
    s, trainer = samples_file(tmp_path, SPEC.replace("n: 25}", f"n: {n}}}"))
    labels = trainer.data["test"]["mode"]
    assert len(labels) == 10 and len(set(labels.tolist())) == 2  # both classes, so order matters
    want = labels[np.arange(n) % 10]
    assert s["fake"].shape == (n, 2)
    np.testing.assert_array_equal(np.argmax(s["fake"], axis=1), want)
    # the fields used are saved with the samples, one row per sample
    np.testing.assert_array_equal(s["field/mode"], want)
    assert s["field/mode"].dtype == np.int64
    assert set(s) == {"fake", "real", "centres", "field/mode"}


def test_the_train_split_conditions_samples_when_it_is_the_evaluated_one(tmp_path: pathlib.Path) -> None:
    s, trainer = samples_file(tmp_path, SPEC.replace("  split: test\n", "  split: train\n"))
    np.testing.assert_array_equal(s["field/mode"], trainer.data["train"]["mode"][:25])
    np.testing.assert_array_equal(np.argmax(s["fake"], axis=1), trainer.data["train"]["mode"][:25])


def test_noise_is_drawn_as_for_an_unconditional_generator(tmp_path: pathlib.Path) -> None:
    s, trainer = samples_file(tmp_path)
    # the noise part of each sample is what an unconditional sample of the same noise gives
    wiggle = trainer.sample("wiggle", 25)
    np.testing.assert_allclose(s["fake"] - 10 * np.eye(2)[s["field/mode"]], wiggle, atol=1e-5)
    assert np.abs(wiggle).max() > 0  # the noise is really there
    # and a second evaluation draws the same samples (fixed evaluation noise, as today)
    compiled, _ = compile_text(SPEC)
    assert compiled is not None
    again = pathlib.Path(tmp_path / "again")
    evaluate(compiled, trainer, again)
    with np.load(again / "samples.npz") as z:
        np.testing.assert_array_equal(z["fake"], s["fake"])


def test_an_unconditional_generator_saves_no_fields(tmp_path: pathlib.Path) -> None:
    s, _ = samples_file(tmp_path, SPEC.replace("samples: {node: fake,", "samples: {node: wiggle,"))
    assert set(s) == {"fake", "real", "centres"}


def test_the_report_colours_samples_by_their_condition(tmp_path: pathlib.Path) -> None:
    s, _ = samples_file(tmp_path)
    (tmp_path / "run.json").write_text("{}")
    read = report._read_samples(tmp_path / "samples.npz", notes := [])
    assert read is not None and not notes
    np.testing.assert_array_equal(read["field/mode"], s["field/mode"])
    pytest.importorskip("matplotlib")
    fig = report._draw_samples(report.Run(path=tmp_path, info={}, rows=[], samples=read))
    assert fig is not None
    fake = next(c for c in fig.axes[0].collections if c.get_label().startswith("generated"))
    assert fake.get_label().endswith(", by mode")
    colours = fake.to_rgba(fake.get_array())
    # one colour per class: the two classes' samples are told apart
    assert len({tuple(np.round(c, 3)) for c in colours}) == 2


def test_a_non_finite_sample_drops_its_condition_too(tmp_path: pathlib.Path) -> None:
    fake = np.array([[0.0, 1.0], [np.nan, 0.0], [2.0, 2.0]])
    np.savez(tmp_path / "samples.npz", fake=fake, **{"field/mode": np.array([0, 1, 2])})
    read = report._read_samples(tmp_path / "samples.npz", notes := [])
    assert read is not None and len(notes) == 1
    np.testing.assert_array_equal(read["field/mode"], [0, 2])
    assert len(read["fake"]) == 2


def test_a_split_without_the_fields_asked_for_at_run_time_is_a_graph_error() -> None:
    # `onlytorch eval --split` may name a split other than the validated eval.split
    from onlytorch.errors import GraphError
    from onlytorch.evaluation import sample_conditions

    _, trainer = trained()
    with pytest.raises(GraphError, match="there is no 'val' split to draw the conditions of fake from"):
        sample_conditions(trainer, "fake", "val", 5)
    trainer.data["val"] = {"x": trainer.data["test"]["x"]}
    with pytest.raises(GraphError, match=r"fake reads the field\(s\) mode, which the val split lacks"):
        sample_conditions(trainer, "fake", "val", 5)
    assert sample_conditions(trainer, "wiggle", "val", 5) == ({}, {})


# ---------------------------------------------------------------- validation

LACKS = SPEC.replace("  test: {source: synthetic.ring, n: 10, modes: 2}\n", "  test: {source: synthetic.xor, n: 10}\n")


def test_a_sample_node_reading_a_field_the_evaluated_split_lacks_is_located(tmp_path: pathlib.Path) -> None:
    compiled, rep = compile_text(LACKS, "spec.yaml")
    assert compiled is None
    found = [d for d in rep.sorted() if d.code == "E-SAMPLES"]
    assert len(found) == 1
    lines = LACKS.splitlines()
    line = next(i for i, t in enumerate(lines, 1) if "samples: {node: fake" in t)
    assert (found[0].line, found[0].column) == (line, lines[line - 1].index("fake") + 1)
    assert "'mode'" in found[0].message and "test" in found[0].message
    # through the command line: exit 2, compiler-style, no traceback
    path = tmp_path / "spec.yaml"
    path.write_text(LACKS)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2 and f"spec.yaml:{line}:" in result.output and "E-SAMPLES" in result.output
    assert "Traceback" not in result.output


def test_the_same_spec_evaluating_a_split_with_the_field_is_valid() -> None:
    compiled, rep = compile_text(LACKS.replace("  split: test\n", "  split: train\n"))
    assert compiled is not None, [d.message for d in rep.sorted()]


def test_an_evaluated_split_lacking_a_field_of_any_data_input_is_located() -> None:
    # the generator reads no label (so no E-SAMPLES), but evaluation feeds every data input: a
    # crash at the end of training before (KeyError), now refused where the split is chosen
    text = LACKS.replace("samples: {node: fake,", "samples: {node: wiggle,")
    compiled, rep = compile_text(text, "spec.yaml")
    assert compiled is None
    (d,) = rep.sorted()
    lines = text.splitlines()
    line = next(i for i, t in enumerate(lines, 1) if t == "  split: test")
    assert (d.code, d.line, d.column) == ("E-DATA", line, 10)
    assert "eval evaluates the test split, which lacks fields that data inputs read (c reads 'mode'" in d.message
    # the monitor's split, evaluated during training, is held to the same rule
    text = SPEC.replace(
        "  test: {source: synthetic.ring, n: 10, modes: 2}\n",
        "  test: {source: synthetic.ring, n: 10, modes: 2}\n  val: {source: synthetic.xor, n: 10}\n",
    ).replace("  steps: 3\n", "  steps: 3\n  eval_every: 1\n  monitor: {metric: loss}\n")
    compiled, rep = compile_text(text, "spec.yaml")
    assert compiled is None
    (d,) = rep.sorted()
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("  val:"))
    assert (d.code, d.line) == ("E-DATA", line)
    assert "train.monitor evaluates the val split" in d.message


# ---------------------------------------------------------------- the example


def test_cgan_ring_draws_each_sample_on_the_mode_it_was_asked_for(tmp_path: pathlib.Path) -> None:
    """specs/cgan_ring.yaml at reduced length (600 of its 2,000 iterations): every sample lands
    nearest the centre of the mode its test-split row asks for (a generator that ignored its
    condition would manage about 1 in 8), and samples.npz keeps those rows' labels in order."""
    from onlytorch.data.synthetic import ring_centres

    spec = pathlib.Path(__file__).resolve().parents[1] / "specs" / "cgan_ring.yaml"
    out = tmp_path / "run"
    args = ["train", str(spec), "--out", str(out), "-q", "--set", "train.steps=600", "--set", "train.eval_every=600"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    with np.load(out / "samples.npz", allow_pickle=False) as z:
        fake, labels = z["fake"], z["field/mode"]
    compiled, _ = compile_text(spec.read_text())
    assert compiled is not None
    test_labels = Trainer(compiled).data["test"]["mode"]
    np.testing.assert_array_equal(labels, test_labels)  # 2,000 samples, 2,000 test rows: in order
    nearest = np.argmin(((fake[:, None] - ring_centres(8, 2.0)[None]) ** 2).sum(axis=2), axis=1)
    assert (nearest == labels).mean() >= 0.99
    final = json.loads((out / "run.json").read_text())["final"]
    assert final["eval/off_centre"] < 0.15 and final["eval/modes_covered"] == 8
