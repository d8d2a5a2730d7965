"""Initialisation from checkpoints (issue 12, item 2): the spec's ``init:`` entries and
``onlytorch train --init``. Validation reads only the checkpoint's headers and reports located
errors; a fresh run starts the named modules from the checkpoint's values bit for bit (cast to
the graph's dtype), target copies follow their loaded source, ``--resume`` never reloads, and
run.json records each file's path and sha256. Also specs/distill_digits.yaml at reduced length."""

from __future__ import annotations

import hashlib
import json
import pathlib
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from onlytorch_cli.main import cli

import onlytorch
from onlytorch import checkpoint as ckpt
from onlytorch.compile import compile_file, compile_text
from onlytorch.compiler.summary import summarize
from onlytorch.initfrom import load_init

SPECS = pathlib.Path(__file__).resolve().parent.parent / "specs"

HEAD = """\
version: 1
name: {name}
dtype: {dtype}
data:
  train: {{source: synthetic.xor, n: 64}}
  batch_size: 16
inputs:
  x: {{shape: [2], from: train.x}}
  y: {{shape: [1], from: train.y}}
"""
TAIL = """\
train:
  steps: {steps}
  schedule:
    - name: fit
      backward: [{{loss: loss}}]
      step: [opt]
"""
# the run that writes the checkpoint: two modules, net (2-8-1) and aux (2-4)
SOURCE = (
    HEAD
    + """\
modules:
  net: [{{linear: 8}}, tanh, {{linear: 1}}]
  aux: [{{linear: 4}}]
nodes:
  logits: net(x) + mean(aux(x), axis=1, keepdims=True)
losses:
  loss: bce_with_logits(logits, y)
optimizers:
  opt: {{type: adam, lr: 0.05, params: [net, aux]}}
"""
    + TAIL
)


def write(folder: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def source(tmp_path: pathlib.Path) -> pathlib.Path:
    """A checkpoint of a short float64 run of SOURCE (5 steps), inside tmp_path."""
    spec = write(tmp_path, "source", SOURCE.format(name="source", dtype="float64", steps=5))
    result = onlytorch.fit(spec, tmp_path / "src")
    assert result.ok, result.message
    return tmp_path / "src" / "checkpoints" / "last.npz"


def saved(path: pathlib.Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def student(init: str, modules: str = "  other: [{linear: 8}, tanh, {linear: 1}]\n", call: str = "other(x)",
            dtype: str = "float32", steps: int = 3, params: str = "[head]") -> str:  # fmt: skip
    """A spec whose loaded modules no optimizer steps (so that the run's checkpoint shows what was
    loaded), with a trained ``head`` beside them."""
    return (
        HEAD.format(name="student", dtype=dtype)
        + f"modules:\n{modules}  head: [{{linear: 1}}]\n"
        + f"nodes:\n  logits: {call} + head(x)\n"
        + "losses:\n  loss: bce_with_logits(logits, y)\n"
        + f"optimizers:\n  opt: {{type: adam, lr: 0.05, params: {params}}}\n"
        + init
        + TAIL.format(steps=steps)
    )


def values(compiled, prefix: str) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    g = compiled.graph
    return {p.name[len(prefix) + 1 :]: g.get_node_value(p) for p in g.parameters() if p.name.startswith(prefix + ".")}


def run_cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result.exit_code, result.output


# ---------------------------------------------------------------- loading


def test_a_renamed_module_starts_from_the_checkpoint_bit_for_bit_cast_to_the_graph_dtype(
    tmp_path: pathlib.Path, source: pathlib.Path
) -> None:
    init = f"init:\n  - checkpoint: {source.relative_to(tmp_path)}\n    modules: {{net: other}}\n"
    spec = write(tmp_path, "student", student(init))
    compiled, report = compile_file(spec)
    assert compiled is not None, report.render()
    before = values(compiled, "other")
    records = load_init(compiled)
    want = saved(source)
    after = values(compiled, "other")
    assert set(after) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    for rest, value in after.items():
        assert value.dtype == np.float32
        exact = want[f"param/net.{rest}"]
        assert exact.dtype == np.float64
        assert value.tobytes() == exact.astype(np.float32).tobytes(), rest
        assert not np.array_equal(value, before[rest])  # the initialiser's values are replaced
    assert records == [
        {
            "checkpoint": str(source.resolve()),
            "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
            "modules": {"net": "other"},
            "from": "spec",
        }
    ]
    # a fresh run: the loaded module (stepped by no optimizer) ends as loaded; run.json says what was loaded
    result = onlytorch.fit(spec, tmp_path / "run")
    assert result.ok, result.message
    last = saved(tmp_path / "run" / "checkpoints" / "last.npz")
    for rest in after:
        assert last[f"param/other.{rest}"].tobytes() == want[f"param/net.{rest}"].astype(np.float32).tobytes()
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["init"] == records


def test_without_modules_every_module_of_the_same_name_is_loaded(tmp_path: pathlib.Path, source: pathlib.Path) -> None:
    init = f"init:\n  - checkpoint: {source}\n"
    text = student(init, modules="  net: [{linear: 8}, tanh, {linear: 1}]\n", call="net(x)", dtype="float64")
    compiled, report = compile_text(text, "student.yaml", tmp_path)
    assert compiled is not None, report.render()
    assert [e.modules for e in compiled.init] == [{"net": "net"}]  # head: not in the checkpoint, aux: not here
    head = values(compiled, "head")
    load_init(compiled)
    want = saved(source)
    for rest, value in values(compiled, "net").items():
        assert value.tobytes() == want[f"param/net.{rest}"].tobytes()
    assert all(np.array_equal(v, head[k]) for k, v in values(compiled, "head").items())  # untouched
    assert f"init: net from {source} ({source})" in summarize(compiled)


def test_a_partial_mapping_loads_only_the_modules_named(tmp_path: pathlib.Path, source: pathlib.Path) -> None:
    modules = "  net: [{linear: 8}, tanh, {linear: 1}]\n  aux: [{linear: 4}]\n"
    init = f"init:\n  - checkpoint: {source}\n    modules: {{aux: aux}}\n"
    text = student(init, modules, "net(x) + mean(aux(x), axis=1, keepdims=True)", "float64", params="[head, net]")
    compiled, report = compile_text(text, "student.yaml", tmp_path)
    assert compiled is not None, report.render()
    net = values(compiled, "net")
    load_init(compiled)
    want = saved(source)
    assert all(v.tobytes() == want[f"param/aux.{k}"].tobytes() for k, v in values(compiled, "aux").items())
    assert all(np.array_equal(v, net[k]) for k, v in values(compiled, "net").items())
    assert not any(np.array_equal(v, want[f"param/net.{k}"]) for k, v in net.items())


def test_a_target_copy_of_a_loaded_module_starts_from_the_loaded_values(
    tmp_path: pathlib.Path, source: pathlib.Path
) -> None:
    modules = "  net: [{linear: 8}, tanh, {linear: 1}]\n  tgt: {copy_of: net}\n"
    text = student(f"init:\n  - checkpoint: {source}\n", modules, "net(x) + tgt(x)", "float64", params="[head, net]")
    compiled, report = compile_text(text, "student.yaml", tmp_path)
    assert compiled is not None, report.render()
    assert [e.modules for e in compiled.init] == [{"net": "net"}]
    load_init(compiled)
    want = saved(source)
    for rest, value in values(compiled, "tgt").items():
        assert value.tobytes() == want[f"param/net.{rest}"].tobytes(), rest


def test_a_later_entry_wins(tmp_path: pathlib.Path, source: pathlib.Path) -> None:
    other = tmp_path / "other.npz"
    ckpt.save(other, {k: (v * 2 if k.startswith("param/") else v) for k, v in saved(source).items()})
    init = f"init:\n  - checkpoint: {source}\n  - checkpoint: other.npz\n"
    text = student(init, "  net: [{linear: 8}, tanh, {linear: 1}]\n", "net(x)", "float64")
    compiled, report = compile_text(text, "student.yaml", tmp_path)
    assert compiled is not None, report.render()
    load_init(compiled)
    assert all(
        v.tobytes() == (saved(source)[f"param/net.{k}"] * 2).tobytes() for k, v in values(compiled, "net").items()
    )


# ---------------------------------------------------------------- validation: located, headers only


def test_a_shape_mismatch_is_located_at_the_mapping_key_and_names_both_shapes(
    tmp_path: pathlib.Path, source: pathlib.Path
) -> None:
    init = f"init:\n  - checkpoint: {source}\n    modules: {{net: other}}\n"
    text = student(init, modules="  other: [{linear: 16}, tanh, {linear: 1}]\n")
    compiled, report = compile_text(text, "student.yaml", tmp_path)
    assert compiled is None
    (d,) = report.errors
    line = text.splitlines().index("    modules: {net: other}") + 1
    assert (d.code, d.line, d.column) == ("E-INIT-SHAPE", line, len("    modules: {") + 1)
    assert d.message == (
        "parameter other.0.weight has shape (2, 16) here but param/net.0.weight has shape (2, 8) in the checkpoint"
    )


def test_a_missing_checkpoint_is_located_at_the_path(tmp_path: pathlib.Path) -> None:
    text = student("init:\n  - checkpoint: runs/teacher/best.npz\n    modules: {net: other}\n")
    compiled, report = compile_text(text, "student.yaml", tmp_path)
    assert compiled is None
    (d,) = report.errors
    line = text.splitlines().index("  - checkpoint: runs/teacher/best.npz") + 1
    assert (d.code, d.line, d.column) == ("E-INIT-FILE", line, len("  - checkpoint: ") + 1)
    assert f"no such checkpoint: {tmp_path / 'runs/teacher/best.npz'}" in d.message


def test_an_unknown_module_gets_a_did_you_mean(tmp_path: pathlib.Path, source: pathlib.Path) -> None:
    text = student(f"init:\n  - checkpoint: {source}\n    modules: {{nett: other}}\n")
    _, report = compile_text(text, "student.yaml", tmp_path)
    (d,) = report.errors
    assert d.code == "E-INIT-MODULE" and d.hint == "did you mean 'net'?"
    assert "the checkpoint has no module 'nett' (it holds: aux, net)" in d.message


def test_validation_reads_no_array(tmp_path: pathlib.Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # the big arrays' last bytes damaged, every header intact: validation, which reads the zip
    # directory and the first block of each member only, cannot tell; the run's start can
    rng = np.random.default_rng(0)
    shapes = {"0.weight": (2, 1024), "0.bias": (1024,), "2.weight": (1024, 1), "2.bias": (1,)}
    damaged = tmp_path / "damaged.npz"
    ckpt.save(damaged, {f"param/wide.{k}": rng.normal(size=v) for k, v in shapes.items()})
    raw = bytearray(damaged.read_bytes())
    with zipfile.ZipFile(damaged) as z:
        for info in z.infolist():
            if info.file_size > 8192:
                end = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size
                for i in range(end - 64, end):
                    raw[i] ^= 0xFF  # its CRC no longer matches
    damaged.write_bytes(bytes(raw))
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load while validating"))
    text = student("init:\n  - checkpoint: damaged.npz\n", "  wide: [{linear: 1024}, tanh, {linear: 1}]\n", "wide(x)")
    spec = write(tmp_path, "student", text)
    compiled, report = compile_file(spec)
    assert compiled is not None and not report.items, report.render()
    assert [e.modules for e in compiled.init] == [{"wide": "wide"}]
    monkeypatch.undo()
    # the damage is found when the run starts (every entry is checked whole): exit 2, nothing trained
    code, out = run_cli("train", spec, "--out", tmp_path / "run", "-q")
    assert code == 2, out
    assert f"error: init: cannot read checkpoint {damaged}" in out and "damaged" in out
    assert not (tmp_path / "run" / "run.json").exists()


# ---------------------------------------------------------------- the command line and run.json


def test_cli_init_loads_every_matching_module_and_run_json_records_it(
    tmp_path: pathlib.Path, source: pathlib.Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    text = student("", "  net: [{linear: 8}, tanh, {linear: 1}]\n", "net(x)", "float64")
    spec = write(tmp_path, "student", text)
    code, out = run_cli("train", spec, "--out", "run", "-q", "--init", "src/checkpoints/last.npz")
    assert code == 0, out
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["init"] == [
        {
            "checkpoint": str(source),
            "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
            "modules": {"net": "net"},
            "from": "--init",
        }
    ]
    last = saved(tmp_path / "run" / "checkpoints" / "last.npz")
    assert all(last[k].tobytes() == v.tobytes() for k, v in saved(source).items() if k.startswith("param/net."))
    # the Python API's init= is the same
    result = onlytorch.fit(spec, tmp_path / "api", init=source)
    assert result.ok and json.loads((tmp_path / "api" / "run.json").read_text())["init"] == info["init"]


def test_cli_init_with_a_bad_file_exits_2_and_writes_nothing(tmp_path: pathlib.Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    spec = write(tmp_path, "student", student(""))
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    code, out = run_cli("train", spec, "--out", "run", "--init", "notes.txt")
    assert code == 2, out
    assert f"E-INIT-FILE --init notes.txt: {tmp_path / 'notes.txt'} is not a checkpoint" in out
    code, out = run_cli("train", spec, "--out", "run", "--init", "missing.npz")
    assert code == 2 and "missing.npz" in out and "does not exist" in out
    assert not (tmp_path / "run").exists()


def test_resume_does_not_reload(tmp_path: pathlib.Path, source: pathlib.Path) -> None:
    init = f"init:\n  - checkpoint: {source}\n    modules: {{net: other}}\n"
    spec = write(tmp_path, "student", student(init, params="[head, other]", steps=6))
    whole = onlytorch.fit(spec, tmp_path / "whole")
    assert whole.ok
    first = onlytorch.fit(spec, tmp_path / "cut", overrides=["train.steps=3"])
    assert first.ok
    record = json.loads((tmp_path / "cut" / "run.json").read_text())["init"]
    # the init file changes (same shapes): a resume that reloaded it would diverge from the whole run
    ckpt.save(source, {k: (v + 1 if k.startswith("param/") else v) for k, v in saved(source).items()})
    resumed = onlytorch.fit(spec, tmp_path / "cut", resume=True)
    assert resumed.ok and resumed.steps == 6
    a, b = saved(tmp_path / "whole" / "checkpoints" / "last.npz"), saved(tmp_path / "cut" / "checkpoints" / "last.npz")
    assert all(a[k].tobytes() == b[k].tobytes() for k in a if k.startswith("param/"))
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["init"] == record  # what the run started from


# ---------------------------------------------------------------- the example


def test_distill_digits_learns_from_a_teacher_trained_in_another_run(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("sklearn")
    teacher = onlytorch.fit(SPECS / "digits_teacher.yaml", tmp_path / "teacher", overrides=["train.steps=300"])
    assert teacher.ok, teacher.message
    best = tmp_path / "teacher" / "checkpoints" / "best.npz"
    alone = onlytorch.evaluate_checkpoint(SPECS / "digits_teacher.yaml", best)
    result = onlytorch.fit(
        SPECS / "distill_digits.yaml",
        tmp_path / "student",
        overrides=["train.steps=600", "optimizers.opt.schedule.T_max=600", f"init.0.checkpoint={best}"],
    )
    assert result.ok, result.message
    # the teacher inside the student's run is the teacher run's best.npz, on the same test samples
    assert result.metrics["teacher_accuracy"] == pytest.approx(alone.metrics["accuracy"], abs=1e-12)
    assert alone.metrics["accuracy"] > 0.9
    assert result.metrics["accuracy"] > 0.9
