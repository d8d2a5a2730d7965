"""specs/dcgan_digits.yaml trained at reduced length, scored as its header says: a digits_cnn
classifier (itself trained at reduced length) classifies the generator's samples
(benchmarks/digits_gan_score.py). After STEPS iterations the losses are finite, samples.npz holds
(n, 64) images in [0, 1], and a share of the samples is classified with confidence >= 0.9 over
several classes, where uniform noise images and the untrained generator's blobs score (almost)
none."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks import digits_gan_score as score_mod
from onlytorch.compile import compile_file
from onlytorch.train import Trainer

from . import info, ok, spec

pytest.importorskip("sklearn")

STEPS, CNN_STEPS = 400, 150


def _train(name: str, out: str, steps: int, *sets: str) -> None:
    args = ["train", spec(name), "--out", out, "-q", "--set", f"train.steps={steps}"]
    for s in sets:
        args += ["--set", s]
    ok(*args)


def test_dcgan_digits_generates_confidently_classified_digits_at_reduced_length(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _train("digits_cnn", "cnn", CNN_STEPS, f"optimizers.opt.schedule.T_max={CNN_STEPS}", "train.eval_every=150")
    assert info(tmp_path / "cnn")["final"]["eval/accuracy"] >= 0.95
    _train(
        "dcgan_digits",
        "gan",
        STEPS,
        f"train.eval_every={STEPS}",
    )
    summary = info(tmp_path / "gan")
    assert summary["status"] == "completed" and summary["steps_done"] == STEPS
    final = summary["final"]
    assert math.isfinite(final["discriminator/d_loss"]) and math.isfinite(final["generator/g_loss"]), final

    fake = score_mod.read_samples(tmp_path / "gan")
    assert fake.shape == (1000, 64)
    assert fake.min() >= 0.0 and fake.max() <= 1.0

    trainer, logits = score_mod.load_classifier(tmp_path / "cnn")
    gan = score_mod.score(score_mod.classify(trainer, logits, fake))
    noise = score_mod.score(score_mod.classify(trainer, logits, np.random.default_rng(0).uniform(0, 1, fake.shape)))
    compiled, _ = compile_file(spec("dcgan_digits"))
    assert compiled is not None
    blobs = Trainer(compiled, data={}).sample("fake", len(fake))  # the generator as initialised
    untrained = score_mod.score(score_mod.classify(trainer, logits, blobs))
    # 400 steps reach about 9% over 7 classes (the full run 25% over 10; real digits 90%); uniform
    # noise scores 0.2%, the untrained generator 0%
    baseline = max(noise["confident_share"], untrained["confident_share"])
    assert gan["confident_share"] >= max(0.05, 5 * baseline), (gan, noise, untrained)
    assert gan["classes_covered"] >= 5, gan
