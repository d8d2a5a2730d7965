"""TensorBoard event files (onlytorch/tracking/tensorboard.py), read back with tensorboard's own
EventAccumulator: the scalars equal metrics.jsonl exactly, also across an interruption and a
resume; the spec as text and hyper-parameters; a GAN's samples pictures; switched off by the CLI
flag and the spec key."""

from __future__ import annotations

import pathlib
import shutil
import struct

import pytest

import onlytorch as ot
from onlytorch.tracking.tensorboard import EVENTS_DIR, SAMPLES_TAG, event_file_name

from . import SPECS, XOR, accumulator, assert_events_equal_log, exits, log_rows

pytest.importorskip("tensorboardX")
pytest.importorskip("tensorboard")

SETS = ["train.steps=90", "train.log_every=10", "train.checkpoint_every=25", "train.eval_every=30"]


def stop_after(n: int) -> tuple[list[int], object]:
    seen: list[int] = []
    return seen, lambda: len(seen) >= n


def test_the_events_hold_exactly_the_metrics_log(tmp_path: pathlib.Path) -> None:
    result = ot.fit(XOR, tmp_path / "run", overrides=SETS)
    assert result.status == "completed"
    assert [p.name for p in (tmp_path / "run" / EVENTS_DIR).iterdir()] == [event_file_name(0)]
    assert_events_equal_log(tmp_path / "run")
    keys = set().union(*(r.keys() for r in log_rows(tmp_path / "run"))) - {"step", "kind"}
    # the phase's loss, a metric, the learning rate, the gradient norm and the evaluations
    assert keys == {"fit/loss", "train/accuracy", "lr/opt", "grad_norm/opt", "time", "eval/accuracy", "eval/loss"}


def test_a_stopped_run_resumed_has_the_events_of_its_log_and_no_step_twice(tmp_path: pathlib.Path) -> None:
    seen, stop = stop_after(37)
    first = ot.fit(XOR, tmp_path / "run", overrides=SETS, on_progress=lambda s, v: seen.append(s), should_stop=stop)
    assert (first.status, first.steps) == ("interrupted", 37)
    assert_events_equal_log(tmp_path / "run")
    assert ot.fit(XOR, tmp_path / "run", overrides=SETS, resume=True).status == "completed"
    assert_events_equal_log(tmp_path / "run")
    whole = ot.fit(XOR, tmp_path / "whole", overrides=SETS)
    assert whole.status == "completed"
    events = accumulator(tmp_path / "run")
    assert [e.step for e in events.Scalars("lr/opt")] == list(range(10, 91, 10))
    assert [e.step for e in events.Scalars("eval/accuracy")] == [30, 60, 90]


def test_a_killed_run_resumed_drops_the_events_past_its_checkpoint(tmp_path: pathlib.Path) -> None:
    """A process killed after its checkpoint at step 25 had logged steps 30 and 37's rows and
    events; the resume cuts the log to 25 and logs 30 again: the events follow the log."""
    run = tmp_path / "run"
    kept = tmp_path / "last-at-25.npz"
    seen: list[int] = []

    def progress(step: int, values: dict[str, float]) -> None:
        seen.append(step)
        if step == 26:  # the checkpoint of step 25 is on disk: keep it, as a kill would have
            shutil.copy(run / "checkpoints" / "last.npz", kept)

    first = ot.fit(XOR, run, overrides=SETS, on_progress=progress, should_stop=lambda: len(seen) >= 37)
    assert first.steps == 37
    shutil.copy(kept, run / "checkpoints" / "last.npz")  # as if no checkpoint had followed step 25
    before = accumulator(run)
    assert [e.step for e in before.Scalars("lr/opt")] == [10, 20, 30]
    assert ot.fit(XOR, run, overrides=SETS, resume=True).status == "completed"
    assert_events_equal_log(run)
    assert [p.name for p in (run / EVENTS_DIR).iterdir()] == [event_file_name(25)]
    after = accumulator(run)
    assert [e.step for e in after.Scalars("lr/opt")] == list(range(10, 91, 10))
    assert [e.step for e in after.Scalars("eval/accuracy")] == [30, 60, 90]


def test_the_resolved_spec_is_text_and_hyperparameters(tmp_path: pathlib.Path) -> None:
    from tensorboard.plugins.hparams import plugin_data_pb2

    ot.fit(XOR, tmp_path / "run", overrides=["train.steps=20", "optimizers.opt.lr=0.02"])
    ea = accumulator(tmp_path / "run")
    text = ea.Tensors("spec/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "name: xor" in text and "lr: 0.02" in text and "`optimizers.opt.lr=0.02`" in text
    content = ea.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["train.steps"].number_value == 20
    assert hp["optimizers.opt.lr"].number_value == pytest.approx(0.02)
    assert hp["optimizers.opt.type"].string_value == "adam"
    assert hp["name"].string_value == "xor"
    end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"])
    assert end.session_end_info.status == 1  # STATUS_SUCCESS


def test_a_gan_run_has_its_samples_picture_at_each_evaluation(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("matplotlib")
    sets = ["train.steps=40", "train.log_every=10", "train.eval_every=20", "eval.samples.n=200"]
    result = ot.fit(str(SPECS / "gan_ring.yaml"), tmp_path / "run", overrides=sets)
    assert result.status == "completed"
    ea = accumulator(tmp_path / "run")
    images = ea.Images(SAMPLES_TAG)
    assert [i.step for i in images] == [20, 40]
    png = images[-1].encoded_image_string
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (images[-1].width, images[-1].height)
    assert_events_equal_log(tmp_path / "run")


def test_no_tensorboard_and_the_spec_key_write_no_events(tmp_path: pathlib.Path) -> None:
    exits(0, "train", XOR, "--out", tmp_path / "cli", "--set", "train.steps=20", "--no-tensorboard", "-q")
    assert not (tmp_path / "cli" / EVENTS_DIR).exists()
    spec = tmp_path / "xor_off.yaml"
    spec.write_text(pathlib.Path(XOR).read_text() + "logging: {tensorboard: false}\n")
    assert ot.fit(str(spec), tmp_path / "spec", overrides=["train.steps=20"]).status == "completed"
    assert not (tmp_path / "spec" / EVENTS_DIR).exists()
    assert ot.fit(XOR, tmp_path / "set", overrides=["train.steps=20", "logging.tensorboard=false"]).ok
    assert not (tmp_path / "set" / EVENTS_DIR).exists()
    assert ot.fit(XOR, tmp_path / "lib", overrides=["train.steps=20"], tensorboard=False).ok
    assert not (tmp_path / "lib" / EVENTS_DIR).exists()
    # fit(tensorboard=True) wins over the spec's false
    assert ot.fit(str(spec), tmp_path / "on", overrides=["train.steps=20"], tensorboard=True).ok
    assert_events_equal_log(tmp_path / "on")
    # the default: on (tensorboardX is installed here)
    exits(0, "train", XOR, "--out", tmp_path / "default", "--set", "train.steps=20", "-q")
    assert_events_equal_log(tmp_path / "default")


def test_a_misspelt_logging_key_is_a_located_diagnostic(tmp_path: pathlib.Path) -> None:
    spec = tmp_path / "xor_bad.yaml"
    text = pathlib.Path(XOR).read_text()
    spec.write_text(text + "logging: {tensorbord: false}\n")
    line = text.count("\n") + 1
    out = exits(2, "validate", spec).output
    assert f"{spec}:{line}:11: E-KEY unknown key 'tensorbord'" in out and "did you mean 'tensorboard'" in out
