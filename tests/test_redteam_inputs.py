"""Regression tests for hostile and unlucky inputs found by a red-team pass (issue 10): a data
entry without its `source`/`type`, numbers of the wrong type in float and source fields, .csv
tables refused at validation (ragged rows, bad cells, huge integers, a BOM), .npz archives with
two members of one name or uint64 values past int64, and subgraph parameters checked against the
memory limit before any of them is allocated."""

from __future__ import annotations

import pathlib
import time
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from onlytorch_cli.main import cli

from onlytorch.compile import compile_file
from onlytorch.data.sources import DataError, LoadContext, load_source

SPECS = pathlib.Path(__file__).resolve().parents[1] / "specs"
XOR = (SPECS / "xor.yaml").read_text(encoding="utf-8")


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, result.output


def xor_with(tmp_path: pathlib.Path, old: str, new: str) -> pathlib.Path:
    assert old in XOR
    path = tmp_path / "s.yaml"
    path.write_text(XOR.replace(old, new), encoding="utf-8")
    return path


def diagnostics(path: pathlib.Path, **kwargs: object) -> list[tuple[str, int | None, str]]:
    _, report = compile_file(path, **kwargs)  # type: ignore[arg-type]
    return [(d.code, d.line, d.message) for d in report.sorted()]


# ---------------------------------------------------------------- a data entry or optimizer without its kind

SOURCE = "train: {source: synthetic.xor, n: 256, noise: 0.05}"


@pytest.mark.parametrize(
    ("new", "needle"),
    [
        ("train: {noise: 0.05}", "data.train needs the key 'source'"),
        ("train: [1, 2]", "data.train must be a mapping with a 'source' key, got [1, 2]"),
        ("train: {source: 3}", "unknown source 3"),
    ],
)
def test_a_data_entry_without_a_usable_source_lists_the_sources(tmp_path, new, needle):
    found = diagnostics(xor_with(tmp_path, SOURCE, new))
    assert len(found) == 1
    code, line, message = found[0]
    assert (code, line) == ("E-TYPE", 8)
    assert needle in message and "synthetic.xor" in message and "file.csv" in message, message


def test_an_optimizer_without_type_lists_the_types(tmp_path):
    found = diagnostics(xor_with(tmp_path, "opt: {type: adam, lr: 0.05", "opt: {lr: 0.05"))
    assert [(c, line) for c, line, _ in found] == [("E-TYPE", 23)]
    assert "optimizers.opt needs the key 'type'" in found[0][2] and "adam" in found[0][2]


def test_an_override_of_an_optimizer_without_type_lists_the_types(tmp_path):
    found = diagnostics(xor_with(tmp_path, "x", "x"), overrides=[("optimizers.opt", {"lr": 1})])
    assert found and "type is one of: sgd, adam" in found[0][2]


# ---------------------------------------------------------------- numbers of the wrong type


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("lr: 0.05", "lr: true", "optimizers.opt.lr: must be a number, not true"),
        ("lr: 0.05", "lr: 0.05, betas: [0.9, true]", "betas: item 1: must be a number, not true"),
        ("noise: 0.05", "noise: true", "data.train.noise: must be a number, not true"),
        ("n: 256", "n: 256.0", "data.train.n: must be an integer, not float 256.0"),
        ("n: 256", "n: '256'", "data.train.n: must be an integer, not str '256'"),
        ("n: 256", "n: 99999999999999999999999", "out of range"),
    ],
)
def test_float_and_source_fields_refuse_booleans_and_inexact_integers(tmp_path, old, new, needle):
    found = diagnostics(xor_with(tmp_path, old, new))  # (both the train and the test source, for noise and n)
    assert found and {c for c, _, _ in found} == {"E-TYPE"}, found
    assert needle in found[0][2], found


def test_a_learning_rate_written_1e_minus_3_still_works(tmp_path):
    # YAML 1.1 reads 1e-3 (no dot) as a string; that is how learning rates are written
    assert diagnostics(xor_with(tmp_path, "lr: 0.05", "lr: 1e-3")) == []


def test_an_override_of_a_float_with_true_is_refused(tmp_path):
    found = diagnostics(xor_with(tmp_path, "x", "x"), overrides=[("optimizers.opt.lr", True)])
    assert found and "must be a number, not true" in found[0][2]


# ---------------------------------------------------------------- .csv tables

CSV_SPEC = """\
version: 1
name: csv
data:
  train: {source: file.csv, path: t.csv, columns: {x: [a, b], y: label}, int_fields: [y]}
  batch_size: 4
inputs:
  x: {shape: [2], from: train.x}
  y: {shape: [], dtype: int64, from: train.y}
modules:
  net: [{linear: 2}]
losses:
  loss: cross_entropy(net(x), y)
optimizers:
  opt: {type: sgd, lr: 0.1, params: [net]}
train:
  steps: 2
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""
GOOD_ROWS = ["a,b,label", "0.1,0.2,0", "0.3,0.4,1", "0.5,0.6,1", "0.7,0.8,0"]


def csv_spec(tmp_path: pathlib.Path, rows: list[str] | bytes) -> pathlib.Path:
    data = rows if isinstance(rows, bytes) else ("\n".join(rows) + "\n").encode()
    (tmp_path / "t.csv").write_bytes(data)
    (tmp_path / "s.yaml").write_text(CSV_SPEC, encoding="utf-8")
    return tmp_path / "s.yaml"


def bad_row(row: str) -> list[str]:
    return [*GOOD_ROWS[:3], row, *GOOD_ROWS[3:]]


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("0.1,0.2", "line 4 has 2 cells; column 'label' is missing"),
        ("0.1,0.2,1,9,9", "line 4 has 5 cells, the first row 3"),
        ("0.1,abc,1", "line 4, column 'b': 'abc' is not a number"),
        ("0.1,0.2,1.5", "line 4, column 'label': '1.5' is not an integer"),
        ("0.1,0.2,1e30", "'1e30' is not an integer of at most 2**53 in size"),
        ("0.1,0.2,inf", "'inf' is not an integer"),
        ("0.1,0.2,\x1b[2J" + "s" * 5000, "'\\x1b[2Jsss"),
    ],
)
def test_a_bad_csv_row_is_refused_when_the_spec_is_validated(tmp_path, row, needle):
    found = diagnostics(csv_spec(tmp_path, bad_row(row)))
    assert len(found) == 1, found
    code, line, message = found[0]
    assert (code, line) == ("E-DATA", 4)  # at the data entry of the spec
    assert needle in message, message
    assert len(message) < 400 and "\x1b" not in message  # a short, escaped excerpt of the file


def test_a_bad_csv_cell_makes_train_exit_2_and_write_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv_spec(tmp_path, bad_row("0.1,0.2,1e30"))
    code, output = run("train", "s.yaml", "--out", "run")
    assert code == 2, output
    assert "s.yaml:4:" in output and "E-DATA" in output
    assert not (tmp_path / "run" / "run.json").exists()


def test_a_csv_with_a_header_and_no_rows_is_refused_at_validation(tmp_path):
    found = diagnostics(csv_spec(tmp_path, ["a,b,label"]))
    assert [(c, line) for c, line, _ in found] == [("E-DATA", 4)]
    assert "no data rows" in found[0][2]


def test_a_csv_with_a_bom_blank_lines_and_crlf_reads_as_the_plain_table(tmp_path):
    plain = load_source(
        {
            "source": "file.csv",
            "path": str(csv_spec(tmp_path, GOOD_ROWS).parent / "t.csv"),
            "columns": {"x": ["a", "b"]},
        },
        LoadContext(),
    )
    odd = (
        b"\xef\xbb\xbf"
        + b"\r\n".join(r.encode() for r in [GOOD_ROWS[0], b"".decode(), *GOOD_ROWS[1:], "   "])
        + b"\r\n"
    )
    assert diagnostics(csv_spec(tmp_path, odd)) == []
    got = load_source(
        {"source": "file.csv", "path": str(tmp_path / "t.csv"), "columns": {"x": ["a", "b"]}}, LoadContext()
    )
    np.testing.assert_array_equal(got["x"], plain["x"])


def test_integer_labels_past_2_53_are_refused_when_loading(tmp_path):
    csv_spec(tmp_path, bad_row("0.1,0.2,-99999999999999999999"))
    params = {"source": "file.csv", "path": str(tmp_path / "t.csv"), "columns": {"y": "label"}, "int_fields": ["y"]}
    with pytest.raises(DataError, match=r"line 4, column 'label'.*2\*\*53"):
        load_source(params, LoadContext())


# ---------------------------------------------------------------- .npz archives

NPZ_SPEC = CSV_SPEC.replace(
    "train: {source: file.csv, path: t.csv, columns: {x: [a, b], y: label}, int_fields: [y]}",
    "train: {source: file.npz, path: t.npz}",
)


def test_an_npz_with_two_members_of_one_name_is_refused(tmp_path):
    buf = {}
    for k, v in {"x": np.zeros((4, 2)), "x2": np.ones((4, 2)), "y": np.zeros(4, np.int64)}.items():
        path = tmp_path / f"{k}.npy"
        np.save(path, v)
        buf[k] = path.read_bytes()
    with zipfile.ZipFile(tmp_path / "t.npz", "w") as z:
        z.writestr("x.npy", buf["x"])
        with pytest.warns(UserWarning):
            z.writestr("x.npy", buf["x2"])
        z.writestr("y.npy", buf["y"])
    (tmp_path / "s.yaml").write_text(NPZ_SPEC, encoding="utf-8")
    found = diagnostics(tmp_path / "s.yaml")
    assert [(c, line) for c, line, _ in found] == [("E-DATA", 4)]
    assert "two members named 'x.npy'" in found[0][2]


def test_uint64_values_past_int64_are_refused_not_wrapped(tmp_path):
    np.savez(tmp_path / "t.npz", y=np.array([1, 2**63 + 5], np.uint64))
    with pytest.raises(DataError, match="past the int64 range"):
        load_source({"source": "file.npz", "path": str(tmp_path / "t.npz")}, LoadContext())
    np.savez(tmp_path / "t.npz", y=np.array([1, 2], np.uint64))
    assert load_source({"source": "file.npz", "path": str(tmp_path / "t.npz")}, LoadContext())["y"].tolist() == [1, 2]


# ---------------------------------------------------------------- memory: subgraph parameters


def test_subgraph_parameters_are_all_checked_before_any_is_allocated(tmp_path):
    params = ", ".join(f"W{i}: {{shape: [4000, 4000]}}" for i in range(8))
    module = f"  sb:\n    args: [a]\n    params: {{{params}}}\n    output: a + " + " + ".join(
        f"0*mean(W{i})" for i in range(8)
    )
    path = tmp_path / "s.yaml"
    path.write_text(
        XOR.replace("modules:\n", "modules:\n" + module + "\n").replace("logits: net(x)", "logits: sb(net(x))"),
        encoding="utf-8",
    )
    start = time.perf_counter()
    compiled, report = compile_file(path, max_memory=256 * 2**20)
    took = time.perf_counter() - start
    assert compiled is None
    assert [d.code for d in report.errors] == ["E-MEMORY"]
    assert "parameter W1" in report.errors[0].message
    # 8 x 64 MB of random initialisation would take seconds; nothing of it is made
    assert took < 5, took


def test_an_npz_of_too_many_members_is_refused_before_reading_their_headers(tmp_path, monkeypatch):
    from onlytorch import safe_files
    from onlytorch.data import files

    monkeypatch.setattr(files, "MAX_NPZ_ARRAYS", 5)
    np.savez(tmp_path / "t.npz", **{f"a{i}": np.zeros(4) for i in range(6)}, x=np.zeros((4, 2)))
    with pytest.raises(DataError, match="it holds 7 members, more than the 5 allowed"):
        load_source({"source": "file.npz", "path": str(tmp_path / "t.npz")}, LoadContext())
    assert safe_files.MAX_NPZ_ARRAYS == 10_000


def test_a_message_quoting_a_spec_path_sends_no_escape_sequence_to_the_terminal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(NPZ_SPEC.replace("path: t.npz", 'path: "\\x1b[2Jx\\x07.npz"'), encoding="utf-8")
    code, output = run("validate", "s.yaml")
    assert code == 2
    assert "no such file" in output and "?[2Jx?.npz" in output
    assert "\x1b" not in output and "\x07" not in output
