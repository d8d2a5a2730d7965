"""The run directory's metrics table (onlytorch/run.py): metrics.csv holds every logged row under
a header with every key any row has; rows whose keys the header already has are appended (a long
run stays linear), and a row with a new key rewrites the table with the wider header."""

from __future__ import annotations

import csv
import pathlib

import pytest

from onlytorch.compile import compile_file
from onlytorch.run import Run
from onlytorch.train import Record, Trainer

SPECS = pathlib.Path(__file__).resolve().parents[1] / "specs"


@pytest.fixture
def run(tmp_path: pathlib.Path) -> Run:
    compiled, report = compile_file(SPECS / "xor.yaml")
    assert compiled is not None, report.render()
    return Run(tmp_path, compiled, Trainer(compiled), "specs/xor.yaml", [])


def table(path: pathlib.Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path / "metrics.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def test_rows_with_known_keys_are_appended_and_a_new_key_widens_the_header(run: Run, monkeypatch) -> None:
    rewrites = []
    write = run._write_csv

    def counting() -> None:
        rewrites.append(len(run.rows))
        write()

    monkeypatch.setattr(run, "_write_csv", counting)
    for step in range(1, 5):
        run.log("train", Record(step, {"fit/loss": 1.0 / step, "time": 0.1 * step}))
    assert rewrites == [1], "only the first row writes the header; the others are appended"
    header, rows = table(run.path)
    assert header == ["step", "kind", "fit/loss", "time"]
    assert [float(r["fit/loss"]) for r in rows] == [1.0, 0.5, 1.0 / 3, 0.25]
    # An eval row brings new keys: the table is rewritten with them, older rows left blank there.
    run.log("eval", Record(4, {"eval/accuracy": 1.0}))
    run.log("train", Record(5, {"fit/loss": 0.2, "time": 0.5}))
    assert rewrites == [1, 5]
    header, rows = table(run.path)
    assert header == ["step", "kind", "fit/loss", "time", "eval/accuracy"]
    assert [r["kind"] for r in rows] == ["train"] * 4 + ["eval", "train"]
    assert rows[0]["eval/accuracy"] == "" and rows[4]["eval/accuracy"] == "1.0" and rows[5]["fit/loss"] == "0.2"


def test_the_table_always_matches_the_jsonl_rows(run: Run) -> None:
    keys = [["a"], ["a", "b"], ["b"], ["c", "a"], ["a"]]
    for step, ks in enumerate(keys, 1):
        run.log("train", Record(step, {k: float(step) for k in ks}))
    header, rows = table(run.path)
    assert header == ["step", "kind", "a", "b", "c"]
    for step, (ks, row) in enumerate(zip(keys, rows), 1):
        assert {k: row[k] for k in ("a", "b", "c") if row[k]} == {k: str(float(step)) for k in ks}
