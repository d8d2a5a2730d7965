"""Input from someone else: a spec, its data files, --set values and the names that become paths.

Each case is refused before anything is read, allocated or written, with a located message
(file:line:col for a spec value, the --set item, the file for a data file), a bounded amount of
output, and exit code 2 (docs/inputs.md states the rules)."""

from __future__ import annotations

import io
import os
import pathlib
import threading
import zipfile
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pytest
from click.testing import CliRunner
from onlytorch_cli.main import cli

from onlytorch import safe_files
from onlytorch.compile import compile_file, compile_text
from onlytorch.data import files
from onlytorch.data.sources import DataError, LoadContext, load_source, source_fields
from onlytorch.spec.diagnostics import Diagnostic, excerpt
from onlytorch.spec.overrides import parse

SPECS = pathlib.Path(__file__).resolve().parents[1] / "specs"
XOR = (SPECS / "xor.yaml").read_text(encoding="utf-8")
TIMEOUT = 60  # a regression that blocks (a FIFO read) fails the test instead of hanging the suite
T = TypeVar("T")


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, result.output


def codes(path: pathlib.Path, **kwargs: object) -> list[tuple[str, int | None, int | None]]:
    _, report = compile_file(path, **kwargs)  # type: ignore[arg-type]
    return [(d.code, d.line, d.column) for d in report.sorted()]


def xor_with(tmp_path: pathlib.Path, old: str, new: str, name: str = "s.yaml") -> pathlib.Path:
    assert old in XOR
    path = tmp_path / name
    path.write_text(XOR.replace(old, new), encoding="utf-8")
    return path


def tree(root: pathlib.Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---------------------------------------------------------------- names that become paths


@pytest.mark.parametrize(
    "name",
    ["../../escape", "/tmp/abs", ".", "..", "''", '"a\\0b"', '"-rf"', "a/b", "x" * 5000],
    ids=["parent", "absolute", "dot", "dotdot", "empty", "nul", "dash", "slash", "5000-chars"],
)
def test_a_name_that_is_not_one_path_component_is_refused_at_its_position(tmp_path, name):
    path = xor_with(tmp_path, "name: xor", f"name: {name}")
    assert codes(path) == [("E-TYPE", 5, 7)]
    code, out = run("validate", path)
    assert code == 2
    assert f"{path}:5:7: E-TYPE name: " in out and "is not a valid run name" in out
    assert len(out) < 2000  # a 5,000-character name is quoted as a short excerpt


@pytest.mark.parametrize("name", ["xor", "gan-ring", "v1.2_final", "A" * 100])
def test_ordinary_names_pass(tmp_path, name):
    assert codes(xor_with(tmp_path, "name: xor", f"name: {name}")) == []


def test_training_a_spec_named_to_escape_writes_nothing_anywhere(tmp_path, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    spec = xor_with(work, "name: xor", "name: ../../escape")
    before = tree(tmp_path)
    code, out = run("train", spec, "--set", "train.steps=1")
    assert code == 2 and "E-TYPE name:" in out
    assert tree(tmp_path) == before  # no runs/, no escape/ above it


def test_a_name_set_on_the_command_line_is_checked_and_says_where_it_came_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = run("train", SPECS / "xor.yaml", "--set", "name=../../escape")
    assert code == 2
    assert "E-TYPE name: '../../escape' is not a valid run name" in out
    assert "(the value comes from --set 'name')" in out
    assert tree(tmp_path) == set()


# ---------------------------------------------------------------- integers


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("true", "must be an integer, not true"),
        ("3.0", "must be an integer, not float 3.0"),
        ("1.0e+30", "must be an integer, not float 1e+30"),
        ("'3'", "must be an integer, not str '3'"),
        ("1000000000000000000000000000000", "is out of range: integers here are at most 2**53"),
        ("-9007199254740993", "is out of range"),
    ],
)
def test_an_integer_field_takes_only_an_integer_in_range(tmp_path, value, message):
    path = xor_with(tmp_path, "steps: 400", f"steps: {value}")
    _, report = compile_file(path)
    assert [(d.code, d.line, d.column) for d in report.items] == [("E-TYPE", 25, 10)]
    assert message in report.items[0].message


def test_integers_inside_lists_and_optional_fields_are_checked_too(tmp_path):
    path = xor_with(tmp_path, "x: {shape: [2], from: train.x}", "x: {shape: [true], from: train.x}")
    _, report = compile_file(path)
    assert any(d.code == "E-TYPE" and "item 0: must be an integer, not true" in d.message for d in report.items)
    path = xor_with(tmp_path, "log_every: 50", "log_every: 50\n  eval_every: false")
    assert codes(path) == [("E-TYPE", 27, 15)]


def test_an_integer_of_a_million_digits_is_an_error_not_pythons_advice(tmp_path):
    path = xor_with(tmp_path, "steps: 400", "steps: " + "9" * 100_000)
    _, report = compile_file(path)
    (d,) = report.items
    assert (d.code, d.line, d.column) == ("E-YAML", 25, 10)
    assert "an integer of 100000 digits is far out of range" in d.message
    assert "set_int_max_str_digits" not in d.message and len(d.message) < 200


def test_large_integers_within_the_bound_still_work(tmp_path):
    assert codes(xor_with(tmp_path, "seed: 0", f"seed: {2**53}")) == []


# ---------------------------------------------------------------- the spec file itself


def without_blocking(fn: Callable[[], T]) -> T:
    """fn() run in a daemon thread: a regression that blocks on a FIFO fails the test instead of hanging it."""
    out: list[T] = []
    raised: list[BaseException] = []

    def target() -> None:
        try:
            out.append(fn())
        except BaseException as e:
            raised.append(e)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(TIMEOUT)
    assert not worker.is_alive(), "blocked reading a FIFO"
    if raised:
        raise raised[0]
    return out[0]


def test_a_fifo_as_the_spec_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)  # no writer: reading it would block forever
    compiled, report = without_blocking(lambda: compile_file(fifo))
    (d,) = report.items
    assert compiled is None and (d.code, d.line) == ("E-YAML", None)
    assert d.message == "cannot read the spec: it is a FIFO (named pipe), not a regular file"
    code, out = without_blocking(lambda: run("validate", fifo))
    assert code == 2 and out.startswith(f"{fifo}: E-YAML cannot read the spec: it is a FIFO")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_a_device_as_the_spec_is_refused():
    _, report = compile_file("/dev/zero")
    (d,) = report.items
    assert d.code == "E-YAML" and d.message == "cannot read the spec: it is a character device, not a regular file"
    assert d.hint == "a spec is a regular YAML file of at most 1.0 MiB (see docs/inputs.md)"


def test_a_spec_over_the_size_limit_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as fh:
        fh.truncate(2**30)  # 1 GiB of NULs (sparse: nothing is written, and nothing must be read)
    code, out = run("train", big)
    assert code == 2
    assert f"{big}: E-YAML cannot read the spec: it holds 1.0 GiB, over the 1.0 MiB limit" in out
    assert len(out) < 1000


def test_the_size_limit_is_inclusive(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x" * 10)
    assert safe_files.read_regular(f, 10, "the spec") == b"x" * 10
    f.write_bytes(b"x" * 11)
    with pytest.raises(safe_files.RefusedFile, match="holds 11 bytes, over the 10 bytes limit for the spec"):
        safe_files.read_regular(f, 10, "the spec")


def test_paths_with_a_nul_byte_or_an_unknown_user_are_refused_by_name():
    with pytest.raises(safe_files.RefusedFile, match=r"'a\\x00b': the path contains a NUL byte"):
        safe_files.open_regular("a\0b", 10, "the spec")
    with pytest.raises(safe_files.RefusedFile, match="'~nosuchuser_h4' is unknown"):
        safe_files.expand_user("~nosuchuser_h4/x.npz", "the data file")


# ---------------------------------------------------------------- messages stay small


def test_a_huge_key_prints_a_window_of_its_line_not_the_line(tmp_path):
    key = "k" * 300_000  # the case had 50 MB (over the spec size limit now)
    path = xor_with(tmp_path, "seed: 0", f"seed: 0\n? {key}\n: 1")
    code, out = run("validate", path)
    assert code == 2
    assert f"{path}:7:3: E-KEY unknown key 'kkkk" in out
    assert len(out) < 10_000, len(out)
    shown = out.splitlines()[1]
    assert shown == "    ? " + "k" * 158 + "..."


def test_the_excerpt_keeps_the_caret_under_the_column():
    line = "".join(chr(ord("a") + i % 26) for i in range(10_000))
    text, at, room = excerpt(line, 5_000, width=100)
    assert text.startswith("...") and text.endswith("...") and len(text) == 106
    assert text[at - 1] == line[4_999]
    assert room == 50  # characters of the window from the column on
    assert excerpt("short", 3) == ("short", 3, 3)
    assert excerpt("x" * 300, 301, width=100)[1] == 104  # a column past the end stays past the end
    # control characters would reach the terminal (escape sequences): each shows as one "?"
    assert excerpt("a\x1b[31mb", 7)[0] == "a?[31mb"
    rendered = Diagnostic("E-KEY", "m" * 5000, (), 1, 9000, hint="h" * 5000, width=3).render("f", [line * 2])
    assert len(rendered) < 2_600
    head, source, caret, hint = rendered.splitlines()
    assert head.endswith("... (4000 more characters)") and hint.endswith("... (4000 more characters)")
    assert source[caret.index("^") : caret.index("^") + 3] == (line * 2)[8999:9002]
    assert caret.endswith("^~~")


# ---------------------------------------------------------------- --set values


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("train.steps=" + "[" * 200 + "]" * 200, "nests more than 64 levels deep"),
        (
            "train.steps={a: &a [1,1,1,1,1,1,1,1,1,1], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
            "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], d: [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]}",
            "expands to more than 20000 values",
        ),
        ("train.steps=!!python/object/apply:os.system [ls]", "is not allowed: specs hold plain data only"),
        ("train.steps=[1", "expected ',' or ']'"),
        ("train.steps=1\0", "the item contains a NUL byte"),
    ],
    ids=["deep", "alias-bomb", "tag", "syntax", "nul"],
)
def test_set_values_go_through_the_spec_loaders_limits(item, message):
    with pytest.raises(ValueError, match=r"--set 'train\.steps'") as e:
        parse(item)
    assert message in str(e.value)
    assert len(str(e.value)) < 500
    code, out = run("train", SPECS / "xor.yaml", "--set", item)
    assert code == 2 and message in out and "--set" in out


def test_set_values_that_are_ordinary_yaml_still_work():
    assert parse("train.steps=100") == ("train.steps", 100)
    assert parse("optimizers.opt.betas=[0.5, 0.9]") == ("optimizers.opt.betas", [0.5, 0.9])
    assert parse("description=") == ("description", "")
    assert parse("data.train={source: synthetic.xor, n: 8}") == ("data.train", {"source": "synthetic.xor", "n": 8})


# ---------------------------------------------------------------- data paths


def write_npz(path: pathlib.Path, n: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.zeros((n, 2), np.float32), y=np.zeros((n, 1), np.float32))


def npz_spec(folder: pathlib.Path, data_path: str) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    return xor_with(folder, "{source: synthetic.xor, n: 256, noise: 0.05}", f"{{source: file.npz, path: {data_path}}}")


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "home"])
def test_a_data_path_outside_the_spec_folder_is_refused_unless_allowed(tmp_path, how):
    write_npz(tmp_path / "other" / "d.npz")
    folder = tmp_path / "spec"
    folder.mkdir()
    given = {
        "dotdot": "../other/d.npz",
        "absolute": str(tmp_path / "other" / "d.npz"),
        "symlink": "link.npz",
        "home": "~/d.npz",
    }[how]
    if how == "symlink":
        (folder / "link.npz").symlink_to(tmp_path / "other" / "d.npz")
    spec = npz_spec(folder, given)
    _, report = compile_file(spec)
    (d,) = report.items
    assert (d.code, d.line, d.column) == ("E-DATA", 8, 35)
    shown = os.path.expanduser(given)  # the spec's validation expands ~ first
    assert f"'{shown}' is outside the spec's folder {folder.resolve()}" in d.message
    assert "pass --allow-outside to read it, or give the path with --set" in d.message
    code, out = run("validate", spec)
    assert code == 2 and "E-DATA" in out
    if how != "home":
        code, out = run("validate", "--allow-outside", "-q", spec)
        assert code == 0, out
    if how == "dotdot":  # every command that compiles a spec follows the rule and takes the flag
        assert run("graph", spec)[0] == 2
        assert run("graph", "--allow-outside", spec)[0] == 0
        run_dir = tmp_path / "run"
        assert run("train", spec, "--set", "train.steps=2", "--out", run_dir)[0] == 2 and not run_dir.exists()
        code, out = run("train", "--allow-outside", "-q", spec, "--set", "train.steps=2", "--out", run_dir)
        assert code == 0, out
        assert run("eval", spec, "--checkpoint", run_dir / "checkpoints" / "last.npz")[0] == 2
        code, out = run("eval", "--allow-outside", spec, "--checkpoint", run_dir / "checkpoints" / "last.npz")
        assert code == 0, out


def test_a_data_path_given_with_set_may_lie_anywhere(tmp_path, monkeypatch):
    write_npz(tmp_path / "other" / "d.npz")
    spec = npz_spec(tmp_path / "spec", "d.npz")
    write_npz(tmp_path / "spec" / "d.npz")
    elsewhere = str(tmp_path / "other" / "d.npz")
    _, report = compile_file(spec, [("data.train.path", elsewhere)])
    assert report.errors == []
    # only the path the user typed is exempt: the spec's own paths stay confined
    _, report = compile_file(spec, [("data.test", {"source": "file.npz", "path": "../other/d.npz"})])
    assert report.errors == []
    _, report = compile_file(spec, [("data.train.path", "d.npz"), ("seed", 1)])
    assert report.errors == []
    monkeypatch.chdir(tmp_path)
    code, out = run(
        "train", "-q", spec, "--set", f"data.train.path={elsewhere}", "--set", "train.steps=2", "--out", "r"
    )
    assert code == 0, out


def test_data_paths_inside_the_folder_and_the_python_api_are_unaffected(tmp_path):
    write_npz(tmp_path / "spec" / "sub" / "d.npz")
    assert codes(npz_spec(tmp_path / "spec", "sub/d.npz")) == []
    assert codes(npz_spec(tmp_path / "spec", "./sub/../sub/d.npz")) == []
    # the library is the user's own code: a base_dir with no confinement reads anywhere
    fields = source_fields({"source": "file.npz", "path": str(tmp_path / "spec" / "sub" / "d.npz")}, base_dir=tmp_path)
    assert set(fields) == {"x", "y"}
    # compile_text (no spec file) confines only when asked
    text = npz_spec(tmp_path / "spec", "../spec/sub/d.npz").read_text()
    _, report = compile_text(text, "t.yaml", tmp_path / "spec")
    assert report.errors == []
    _, report = compile_text(text, "t.yaml", tmp_path / "spec", data_root=tmp_path / "elsewhere")
    assert [d.code for d in report.errors] == ["E-DATA"]


@pytest.mark.parametrize(
    ("given", "message"),
    [('"a\\0.npz"', "the path contains a NUL byte"), ("~nosuchuser_h4/d.npz", "'~nosuchuser_h4' is unknown")],
    ids=["nul", "unknown-user"],
)
def test_unusable_data_paths_are_located_errors(tmp_path, given, message):
    spec = npz_spec(tmp_path, given)
    _, report = compile_file(spec)
    (d,) = report.items
    assert (d.code, d.line, d.column) == ("E-TYPE", 8, 35) and message in d.message


def test_a_symlink_loop_as_a_data_path_is_a_located_error(tmp_path):
    (tmp_path / "loop.npz").symlink_to(tmp_path / "loop.npz")
    _, report = compile_file(npz_spec(tmp_path, "loop.npz"))
    (d,) = report.items
    assert (d.code, d.line, d.column) == ("E-DATA", 8, 35)
    assert "cannot resolve 'loop.npz': Symlink loop" in d.message


# ---------------------------------------------------------------- data files: kinds and sizes


def test_a_fifo_as_a_data_file_is_refused_without_blocking(tmp_path):
    spec = npz_spec(tmp_path, "d.npz")
    os.mkfifo(tmp_path / "d.npz")
    code, out = without_blocking(lambda: run("validate", spec))
    assert code == 2
    assert f"{spec}:8:35: E-DATA file.npz: cannot read {tmp_path / 'd.npz'}: it is a FIFO (named pipe)" in out
    with pytest.raises(DataError, match="it is a FIFO"):
        without_blocking(lambda: load_source({"source": "file.npz", "path": "d.npz"}, LoadContext(tmp_path)))


def test_a_data_file_that_is_a_directory_or_a_device_is_refused(tmp_path):
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(DataError, match=r"cannot read .*d\.npz: it is a directory, not a regular file"):
        source_fields({"source": "file.npz", "path": "d.npz"}, base_dir=tmp_path)
    if os.path.exists("/dev/zero"):
        with pytest.raises(DataError, match="it is a character device"):
            load_source({"source": "file.csv", "path": "/dev/zero", "columns": {"x": 0}}, LoadContext(tmp_path))


def npy_member(shape: tuple[int, ...], dtype: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


def test_an_npz_whose_header_claims_16_gib_is_refused_before_reading(tmp_path):
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as z:
        z.writestr("x.npy", npy_member((2**31, 1), "<f8", b"\0" * 64))
        z.writestr("y.npy", npy_member((2**31, 1), "<f8", b"\0" * 64))
    spec = npz_spec(tmp_path, "d.npz")
    _, report = compile_file(spec)
    (d,) = report.items
    assert (d.code, d.line, d.column) == ("E-DATA", 8, 35)
    assert "array 'x' claims shape (2147483648, 1) of float64 (16.0 GiB), over the 2.0 GiB limit" in d.message


def test_an_npz_header_claiming_more_than_its_member_holds_is_damaged(tmp_path):
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as z:
        z.writestr("x.npy", npy_member((1000, 2), "<f4", b"\0" * 64))
    with pytest.raises(DataError, match=r"array 'x' claims shape \(1000, 2\) of float32 \(7.8 KiB\) but its member"):
        load_source({"source": "file.npz", "path": "d.npz"}, LoadContext(tmp_path))


def test_an_npz_zip_bomb_is_refused_from_its_zip_directory(tmp_path, monkeypatch):
    # 24 MiB of zeros packs into ~24 KiB; with the bound lowered to 4 MiB it must be refused from the
    # zip directory alone (the real bound, 2 GiB, works the same way; a 2 GiB bomb is slow to build)
    monkeypatch.setattr(files, "MAX_DATA_BYTES", 4 * 2**20)
    header = npy_member((3 * 2**20, 2), "<f4", b"")
    with zipfile.ZipFile(tmp_path / "d.npz", "w", zipfile.ZIP_DEFLATED) as z, z.open("x.npy", "w") as member:
        member.write(header)
        chunk = b"\0" * 2**20
        for _ in range(24):
            member.write(chunk)
    assert (tmp_path / "d.npz").stat().st_size < 2**20
    with pytest.raises(DataError, match=r"d\.npz: array 'x' unpacks to 24\.0 MiB, over the 4\.0 MiB limit$"):
        source_fields({"source": "file.npz", "path": "d.npz"}, base_dir=tmp_path)


def test_integer_arrays_count_at_int64_size_against_the_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_DATA_BYTES", 4096)
    np.savez(tmp_path / "d.npz", y=np.zeros(1000, np.uint8))  # 1000 bytes on disk, 8000 as int64 labels
    with pytest.raises(DataError, match=r"take 7.8 KiB in memory \(integers as int64\), over the 4.0 KiB limit"):
        source_fields({"source": "file.npz", "path": "d.npz"}, base_dir=tmp_path)


def test_a_csv_over_its_size_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_CSV_BYTES", 100)
    (tmp_path / "t.csv").write_text("a\n" + "1\n" * 100)
    with pytest.raises(DataError, match=r"t.csv: it holds 202 bytes, over the 100 bytes limit for the data file"):
        source_fields({"source": "file.csv", "path": "t.csv", "columns": {"x": "a"}}, base_dir=tmp_path)


# ---------------------------------------------------------------- data files: what is quoted


def test_a_csv_cell_with_a_nul_byte_is_an_error_not_a_number(tmp_path):
    (tmp_path / "t.csv").write_bytes(b"a,b\n1,2\n3\0,4\n")
    with pytest.raises(DataError, match=r"t.csv: line 3: the cell '3\\x00' holds a NUL byte"):
        load_source({"source": "file.csv", "path": "t.csv", "columns": {"x": "a"}}, LoadContext(tmp_path))
    # validate reads only the header row for the fields, yet finds it: train never starts
    spec = xor_with(
        tmp_path, "{source: synthetic.xor, n: 256, noise: 0.05}", "{source: file.csv, path: t.csv, columns: {x: a}}"
    )
    code, out = run("train", spec, "--out", tmp_path / "run")
    assert code == 2 and f"{spec}:8:35: E-DATA file.csv: {tmp_path / 't.csv'}: line 3: the cell '3\\x00'" in out
    assert not (tmp_path / "run").exists()


def test_a_csv_nul_in_the_header_is_caught_by_validate(tmp_path):
    (tmp_path / "t.csv").write_bytes(b"a\0,b\n1,2\n")
    spec = xor_with(
        tmp_path, "{source: synthetic.xor, n: 256, noise: 0.05}", "{source: file.csv, path: t.csv, columns: {x: a}}"
    )
    _, report = compile_file(spec)
    assert [(d.code, d.line, d.column) for d in report.items][:1] == [("E-DATA", 8, 35)]
    assert "line 1: the cell 'a\\x00' holds a NUL byte" in report.items[0].message


def test_a_bad_csv_cell_is_quoted_as_a_short_escaped_excerpt(tmp_path):
    secret = "s3cr3t-" * 1000 + "\x1b[2J"
    (tmp_path / "t.csv").write_text(f"a,b\n1,2\n{secret},4\n")
    with pytest.raises(DataError) as e:
        load_source({"source": "file.csv", "path": "t.csv", "columns": {"x": "a"}}, LoadContext(tmp_path))
    message = str(e.value)
    assert "line 3, column 'a': 's3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr'... (7004 characters) is not a number" in message
    assert len(message) < 200 + len(str(tmp_path))


def test_a_missing_column_lists_only_a_few_short_header_cells(tmp_path):
    header = ",".join(f"{'h' * 50}{i}" for i in range(40))
    (tmp_path / "t.csv").write_text(header + "\n" + ",".join("1" * 40) + "\n")
    with pytest.raises(DataError) as e:
        source_fields({"source": "file.csv", "path": "t.csv", "columns": {"x": "nope"}}, base_dir=tmp_path)
    message = str(e.value)
    assert "has no column 'nope' (columns: 'hhhhhhhhhhhh'... (51 characters)," in message
    assert message.endswith(", ...)") and len(message) < 500 + len(str(tmp_path))


def test_a_csv_that_is_not_utf8_quotes_no_bytes_of_it(tmp_path):
    (tmp_path / "t.csv").write_bytes(b"a\n1\n\xff\xfesecret\n")
    with pytest.raises(DataError, match=r"byte 0xff at offset \d+ is not UTF-8") as e:
        load_source({"source": "file.csv", "path": "t.csv", "columns": {"x": "a"}}, LoadContext(tmp_path))
    assert "secret" not in str(e.value)


# ---------------------------------------------------------------- gym env_kwargs


GYM = """\
version: 1
name: t
data:
  train: {source: gym.rollout, env: CartPole-v1, env_kwargs: KWARGS, envs: 2, steps: 8, action: action}
  batch_size: 16
inputs:
  obs: {shape: [4], from: train.obs}
  act: {dtype: int64, from: train.action}
  ret: {from: train.return}
modules:
  pi: [{linear: 2}]
nodes:
  logits: pi(obs)
  action: categorical_sample(logits)
losses:
  loss: -mean(categorical_log_prob(logits, act) * ret)
optimizers:
  opt: {type: adam, lr: 1.0e-3, params: [pi]}
train:
  steps: 2
  schedule:
    - name: pg
      backward: [{loss: loss}]
      step: [opt]
"""


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ("{max_episode_steps: [1]}", "env_kwargs.max_episode_steps is a list; values are numbers, strings"),
        ("{sutton_barto_reward: {a: 1}}", "env_kwargs.sutton_barto_reward is a dict"),
        ("{render_mode: human}", "env_kwargs.render_mode is not allowed: rollouts run headless"),
        ("{render_mode: rgb_array}", "env_kwargs.render_mode is not allowed"),
    ],
)
def test_env_kwargs_that_would_fail_at_reset_are_refused_at_their_position(tmp_path, kwargs, message):
    pytest.importorskip("gymnasium")
    path = tmp_path / "g.yaml"
    path.write_text(GYM.replace("KWARGS", kwargs))
    _, report = compile_file(path)
    (d,) = report.errors
    assert (d.code, d.line, d.column) == ("E-DATA", 4, 62) and message in d.message
    code, out = run("validate", path)
    assert code == 2 and "Traceback" not in out


def test_env_kwargs_that_the_environment_refuses_at_reset_are_reported(tmp_path, monkeypatch):
    gym = pytest.importorskip("gymnasium")
    from onlytorch.data.gym import envs

    def reset(self, **kwargs):  # an environment that fails only when reset, as some do with bad kwargs
        raise ValueError("bad option")

    monkeypatch.setattr(gym.wrappers.TimeLimit, "reset", reset)
    envs._spaces.cache_clear()
    path = tmp_path / "g.yaml"
    path.write_text(GYM.replace("KWARGS", "{max_episode_steps: 7}"))
    _, report = compile_file(path)
    envs._spaces.cache_clear()
    (d,) = report.errors
    assert (d.code, d.line, d.column) == ("E-DATA", 4, 62)
    assert "environment 'CartPole-v1' fails to reset with env_kwargs {'max_episode_steps': 7}: ValueError: bad" in (
        d.message
    )


def test_plain_env_kwargs_still_work(tmp_path):
    pytest.importorskip("gymnasium")
    path = tmp_path / "g.yaml"
    path.write_text(GYM.replace("KWARGS", "{max_episode_steps: 20}"))
    _, report = compile_file(path)
    assert report.errors == []
