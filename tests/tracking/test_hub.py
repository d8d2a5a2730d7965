"""The tracking hub (onlytorch/tracking/hub.py, wiring.py): what a fit tells its trackers and when,
that a failing tracker never fails the run, which trackers run, that the libraries stay unimported
until used, and that the new ``logging:`` key leaves the hash of a spec without it as it was."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import onlytorch as ot
from onlytorch.app import Refused
from onlytorch.tracking import wiring
from onlytorch.tracking.hub import Tracker, Trackers, TrackingContext

from . import SPECS, XOR, exits, log_rows

SETS = ["train.steps=60", "train.log_every=10", "train.checkpoint_every=25", "train.eval_every=30"]

BLOWUP = """\
version: 1
name: blowup
data:
  train: {source: synthetic.regression, n: 64, features: 3}
  batch_size: 16
inputs:
  x: {shape: [3], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 1}]
nodes:
  pred: net(x)
losses:
  loss: mse(pred, y)
optimizers:
  opt: {type: sgd, lr: 1.0e+30, params: [net]}
train:
  steps: 5
  log_every: 1
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""


class Recorder(Tracker):
    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def start(self, ctx: TrackingContext) -> None:
        self.calls.append(("start", ctx))

    def log(self, record: dict[str, Any]) -> None:
        self.calls.append(("log", dict(record)))

    def samples(self, step: int, picture_png: bytes | None, samples: np.ndarray | None) -> None:
        self.calls.append(("samples", (step, picture_png, samples)))

    def end(self, status: str, run_json: dict[str, Any]) -> None:
        self.calls.append(("end", (status, run_json)))

    def of(self, kind: str) -> list[Any]:
        return [arg for k, arg in self.calls if k == kind]


class Broken(Tracker):
    name = "broken"

    def __init__(self, where: str) -> None:
        self.where, self.calls = where, 0

    def _maybe(self, what: str) -> None:
        if what == self.where:
            self.calls += 1
            raise RuntimeError("the tracking server went away")

    def start(self, ctx: TrackingContext) -> None:
        self._maybe("start")

    def log(self, record: dict[str, Any]) -> None:
        self._maybe("log")

    def end(self, status: str, run_json: dict[str, Any]) -> None:
        self._maybe("end")


@pytest.fixture
def only(monkeypatch: pytest.MonkeyPatch):
    """fit runs exactly these trackers."""

    def use(*trackers: Tracker) -> None:
        monkeypatch.setattr(
            wiring, "choose_trackers", lambda compiled, tensorboard=None, mlflow=None: Trackers(trackers)
        )

    return use


def test_a_fit_tells_its_trackers_the_start_every_row_and_the_end(tmp_path: pathlib.Path, only) -> None:
    rec = Recorder()
    only(rec)
    result = ot.fit(XOR, tmp_path / "run", overrides=SETS, seed=2)
    assert result.status == "completed"
    kinds = [k for k, _ in rec.calls]
    assert kinds[0] == "start" and kinds[-1] == "end" and set(kinds[1:-1]) == {"log"}
    ctx = rec.of("start")[0]
    assert (ctx.run_dir, ctx.resumed, ctx.start_step, ctx.seed, ctx.name) == (tmp_path / "run", False, 0, 2, "xor")
    assert ctx.spec_text == (tmp_path / "run" / "spec.yaml").read_text()
    assert ctx.resolved_spec == json.loads((tmp_path / "run" / "spec.json").read_text())
    assert ctx.overrides == [*SETS, "seed=2"] and ctx.run_json["status"] == "running"
    assert rec.of("log") == log_rows(tmp_path / "run")
    status, run_json = rec.of("end")[0]
    assert status == "completed" and run_json == json.loads((tmp_path / "run" / "run.json").read_text())


def test_a_resumed_fit_starts_its_trackers_at_the_checkpoint(tmp_path: pathlib.Path, only) -> None:
    first, again = Recorder(), Recorder()
    only(first)
    seen: list[int] = []
    stopped = ot.fit(
        XOR,
        tmp_path / "run",
        overrides=SETS,
        on_progress=lambda s, v: seen.append(s),
        should_stop=lambda: len(seen) >= 37,
    )
    assert stopped.status == "interrupted" and first.of("end")[0][0] == "interrupted"
    only(again)
    assert ot.fit(XOR, tmp_path / "run", overrides=SETS, resume=True).status == "completed"
    ctx = again.of("start")[0]
    assert (ctx.resumed, ctx.start_step) == (True, 37)
    # the rows before the checkpoint were told to the first fit's trackers; the rest to the second's
    assert first.of("log") + again.of("log") == log_rows(tmp_path / "run")
    assert again.of("end")[0][0] == "completed"


def test_the_end_says_diverged(tmp_path: pathlib.Path, only) -> None:
    rec = Recorder()
    only(rec)
    spec = tmp_path / "blowup.yaml"
    spec.write_text(BLOWUP)
    result = ot.fit(str(spec), tmp_path / "run")
    assert result.status == "diverged"
    status, run_json = rec.of("end")[0]
    assert status == "diverged" and run_json["status"] == "diverged" and len(rec.of("end")) == 1


@pytest.mark.parametrize("where", ["start", "log", "end"])
def test_a_tracker_that_raises_is_switched_off_and_the_run_goes_on(
    tmp_path: pathlib.Path, only, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    broken, rec = Broken(where), Recorder()
    only(broken, rec)
    result = ot.fit(XOR, tmp_path / "run", overrides=SETS)
    assert result.status == "completed"
    assert broken.calls == 1  # switched off after its first failure
    assert rec.of("log") == log_rows(tmp_path / "run") and rec.of("end")[0][0] == "completed"
    warnings = [line for line in capsys.readouterr().err.splitlines() if "tracker" in line]
    assert warnings == [
        f"warning: the broken tracker failed in {where} (RuntimeError: the tracking server went away); it is off "
        "for the rest of this run (the run directory still records everything)"
    ]


def test_a_broken_tensorboard_folder_does_not_fail_the_run(tmp_path: pathlib.Path, capsys) -> None:
    pytest.importorskip("tensorboardX")
    run = tmp_path / "run"
    first = ot.fit(XOR, run, overrides=SETS, tensorboard=False, should_stop=lambda: True)
    assert first.status == "interrupted"
    (run / "tensorboard").write_text("a file where the event folder goes")
    result = ot.fit(XOR, run, overrides=SETS, resume=True)
    assert result.status == "completed" and result.steps == 60
    assert "warning: the TensorBoard tracker failed in start" in capsys.readouterr().err


def test_a_gan_run_tells_its_trackers_the_samples_of_each_evaluation(tmp_path: pathlib.Path, only) -> None:
    rec = Recorder()
    only(rec)
    sets = ["train.steps=40", "train.log_every=10", "train.eval_every=20", "eval.samples.n=200"]
    assert ot.fit(str(SPECS / "gan_ring.yaml"), tmp_path / "run", overrides=sets).status == "completed"
    told = rec.of("samples")
    assert [step for step, _, _ in told] == [20, 40]
    _, png, samples = told[-1]
    with np.load(tmp_path / "run" / "samples.npz") as saved:
        np.testing.assert_array_equal(samples, saved["fake"])
    assert samples.shape == (200, 2)
    if wiring.available("matplotlib"):
        assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"
    # each picture is told right after its evaluation's row
    kinds = [(k, a["kind"] if k == "log" else None) for k, a in rec.calls]
    assert kinds[kinds.index(("samples", None)) - 1] == ("log", "eval")


def test_which_trackers_run(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    from onlytorch.app import load_spec

    plain = load_spec(XOR).compiled
    spec = tmp_path / "asks.yaml"
    spec.write_text(pathlib.Path(XOR).read_text() + "logging: {tensorboard: true}\n")
    asks = load_spec(spec).compiled
    assert [t.name for t in wiring.choose_trackers(plain)] == ["TensorBoard"]
    assert [t.name for t in wiring.choose_trackers(plain, tensorboard=False)] == []
    monkeypatch.setattr(wiring, "available", lambda module: False)
    assert [t.name for t in wiring.choose_trackers(plain)] == []  # not installed: silently off by default
    for compiled, tb in ((plain, True), (asks, None)):
        with pytest.raises(Refused, match=r"tensorboardX is not installed: pip install 'onlytorch\[tensorboard\]'"):
            wiring.choose_trackers(compiled, tensorboard=tb)
    assert wiring.choose_trackers(asks, tensorboard=False).trackers == []
    with pytest.raises(Refused, match=r"needs mlflow, which is not installed: pip install 'onlytorch\[mlflow\]'"):
        wiring.choose_trackers(plain, mlflow="sqlite:///x.db")


def test_mlflow_missing_is_a_usage_error_and_nothing_is_written(monkeypatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setattr(wiring, "available", lambda module: module != "mlflow")
    out = exits(2, "train", XOR, "--out", tmp_path / "run", "--mlflow", f"sqlite:///{tmp_path}/m.db", "-q").output
    assert "pip install 'onlytorch[mlflow]'" in out
    assert not (tmp_path / "run").exists() and not (tmp_path / "m.db").exists()


LIBRARIES = ("tensorboardX", "tensorboard", "mlflow", "onnx", "onnxruntime", "torch")


def imported_after(code: str) -> list[str]:
    """The tracking libraries (and torch) in sys.modules after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & set({LIBRARIES!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_import_and_help_import_no_tracking_library() -> None:
    assert imported_after("import onlytorch, onlytorch.tracking.hub, onlytorch.tracking.wiring") == []
    help_ = "from onlytorch_cli.main import cli\ntry:\n    cli({args!r})\nexcept SystemExit:\n    pass"
    assert imported_after(help_.format(args=["--help"])) == []
    assert imported_after(help_.format(args=["train", "--help"])) == []


def test_a_tensorboard_run_imports_tensorboardx_but_not_torch(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("tensorboardX")
    code = f"import onlytorch as ot\nassert ot.fit({XOR!r}, {str(tmp_path / 'run')!r}, overrides=['train.steps=5']).ok"
    assert imported_after(code) == ["tensorboardX"]
    assert (tmp_path / "run" / "tensorboard").is_dir()


# specs/xor.yaml as it stood when `logging:` was added, and its resolved-spec hash as onlytorch
# computed it before the key existed: a run directory trained then must still resume.
OLD_XOR = """\
version: 1
name: xor
seed: 0
data:
  train: {source: synthetic.xor, n: 256, noise: 0.05}
  test: {source: synthetic.xor, n: 64, noise: 0.05}
  batch_size: 32
inputs:
  x: {shape: [2], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 8}, tanh, {linear: 1}]
nodes:
  logits: net(x)
losses:
  loss: bce_with_logits(logits, y)
metrics:
  accuracy: mean(equal(greater(logits, 0), y))
optimizers:
  opt: {type: adam, lr: 0.05, params: [net]}
train:
  steps: 400
  log_every: 50
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
eval:
  split: test
  metrics: [accuracy, loss]
"""
OLD_XOR_HASH = "7c044f45bc5c37d5"


@pytest.mark.parametrize(
    "extra",
    ["", "logging: {}\n", "logging: {tensorboard: true}\n", "logging: {tensorboard: false}\n"],
)
def test_the_logging_key_leaves_the_spec_hash_as_it_was(tmp_path: pathlib.Path, extra: str) -> None:
    from onlytorch.app import load_spec
    from onlytorch.run import resolved_spec, spec_hash

    spec = tmp_path / "xor.yaml"
    spec.write_text(OLD_XOR + extra)
    resolved = resolved_spec(load_spec(spec).compiled)
    assert spec_hash(resolved) == OLD_XOR_HASH
    if "false" in extra:
        assert resolved["logging"] == {"tensorboard": False}  # recorded in spec.yaml, yet no change to resume
    else:
        assert not resolved.get("logging")


def test_a_run_without_the_key_resumes_with_it(tmp_path: pathlib.Path) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(OLD_XOR)
    new.write_text(OLD_XOR + "logging: {tensorboard: false}\n")
    first = ot.fit(str(old), tmp_path / "run", overrides=SETS, tensorboard=False, should_stop=lambda: True)
    assert first.status == "interrupted"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["spec_hash"] == OLD_XOR_HASH
    assert ot.fit(str(new), tmp_path / "run", overrides=SETS, resume=True).status == "completed"
    assert not (tmp_path / "run" / "tensorboard").exists()
