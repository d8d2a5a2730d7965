"""specs/transformer_reverse.yaml trained at reduced length (50 of its 200 steps, the cosine
schedule shortened to match) already reverses >= 95% of the held-out sequences exactly (chance:
1e-8 per sequence, 10% per token; the full run reaches 100%, see the spec's header), and
``onlytorch eval`` on its checkpoint reproduces the run's own evaluation. Also the data source
it trains on, synthetic.reverse."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onlytorch.data.sources import SOURCES, DataError, LoadContext

from . import info, ok, spec

STEPS = 50


def test_transformer_reverse_passes_95_percent_exact_sequences_at_reduced_length(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok(
        "train", spec("transformer_reverse"), "--out", "run", "-q", "--set", f"train.steps={STEPS}",
        "--set", f"optimizers.opt.schedule.T_max={STEPS}", "--set", f"train.eval_every={STEPS}",
    )  # fmt: skip
    summary = info(tmp_path / "run")
    assert summary["status"] == "completed" and summary["eval_split"] == "test"
    final = summary["final"]
    assert final["eval/seq_acc"] >= 0.95, final
    assert final["eval/token_acc"] >= 0.99, final
    evaluated = json.loads(
        ok("eval", spec("transformer_reverse"), "--checkpoint", "run/checkpoints/last.npz", "--json").stdout
    )
    assert evaluated["metrics"]["seq_acc"] == final["eval/seq_acc"]


def _load(seed: int, **params: int) -> dict[str, np.ndarray]:
    source = SOURCES["synthetic.reverse"]
    return source.load(source.parse(params), LoadContext(seed=seed))


def test_reverse_source_yields_token_sequences_and_their_reversal():
    source = SOURCES["synthetic.reverse"]
    fields = source.fields(source.parse({"n": 300, "length": 5, "vocab": 7}))
    assert {k: (f.shape, f.dtype) for k, f in fields.items()} == {"x": ((5,), "int64"), "y": ((5,), "int64")}
    data = _load(0, n=300, length=5, vocab=7)
    x, y = data["x"], data["y"]
    assert x.shape == y.shape == (300, 5) and x.dtype == y.dtype == np.int64
    assert x.min() == 0 and x.max() == 6  # every token of the vocabulary, none outside it
    np.testing.assert_array_equal(y, x[:, ::-1])
    assert not np.array_equal(x, y)  # not all palindromes: the reversal is a task
    np.testing.assert_array_equal(_load(0, n=300, length=5, vocab=7)["x"], x)  # seeded


def test_reverse_source_splits_differ_by_seed():
    """The trainer loads train with the spec's seed and test with seed + 2: different sequences,
    and for the spec's sizes (8 tokens of 10, 8,192 train and 1,000 test) none of the test
    sequences is a train sequence with seeds 0, 1 and 2."""
    for seed in (0, 1, 2):
        train = _load(seed, n=8192)["x"]
        test = _load(seed + 2, n=1000)["x"]
        assert not np.array_equal(train[:1000], test)
        seen = {row.tobytes() for row in train}
        assert not any(row.tobytes() in seen for row in test), seed


def test_reverse_source_refuses_bad_parameters():
    source = SOURCES["synthetic.reverse"]
    with pytest.raises(DataError) as e:
        source.parse({"n": 10, "vocab": 1})
    assert e.value.param == "vocab"
    with pytest.raises(DataError) as e:
        source.parse({"n": 10, "lenght": 4})
    assert "length" in str(e.value)
