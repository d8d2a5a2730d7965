"""The bad-checkpoint corpus: checkpoints of real runs (xor, gan_ring) made wrong in every way a
user, a crash or an attacker can make them, given to ``onlytorch eval --checkpoint`` and to
``onlytorch train --resume``. Each is refused with exit 2 and one message that names the file and
the offending entry, no traceback, and the run directory keeps every byte it had. A property test
mutates valid checkpoints at random (keys, dtypes, shapes, values, truncation, flipped bytes) and
requires a clear CheckpointError, or a resume that continues exactly as the original would have.
Also here: integer labels out of range for cross_entropy / nll, and a slice with step 0."""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onlytorch_cli.main import cli

import onlytorch as ot
from onlytorch import checkpoint as ckpt
from onlytorch.compile import compile_file
from onlytorch.train import Diverged, Trainer

SPECS = pathlib.Path(__file__).resolve().parents[1] / "specs"
SETS = {
    "xor": ["--set", "data.train.n=64"],
    "gan_ring": ["--set", "data.train.n=256", "--set", "eval.samples.n=200"],
}
W = "param/net.0.weight"  # xor's first layer, (2, 8)


def spec(name: str) -> str:
    return str(SPECS / f"{name}.yaml")


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def refused(result: Result, *fragments: str) -> str:
    """Exit 2, one clean message (no traceback, no exception escaping click) holding fragments."""
    out = result.output
    assert "Traceback" not in out, out
    assert result.exception is None or isinstance(result.exception, SystemExit), (result.exception, out)
    assert result.exit_code == 2, (result.exit_code, out)
    for f in fragments:
        assert f in out, (f, out)
    return out


def snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def read(path: pathlib.Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def write(path: pathlib.Path, arrays: dict[str, Any]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A few steps of xor and of gan_ring, trained once for the module."""
    folder = tmp_path_factory.mktemp("bad-ckpt-runs")
    for name, steps in (("xor", 5), ("gan_ring", 3)):
        result = invoke("train", spec(name), "--out", folder / name, "--set", f"train.steps={steps}", *SETS[name], "-q")
        assert result.exit_code == 0, result.output
    return folder


# ------------------------------------------------------------------ the corpus

Mutation = Callable[[dict[str, np.ndarray]], dict[str, Any]]


def edit(key: str, value: Any) -> Mutation:
    """A mutation that sets one entry (to value, or to value(old) when it is callable) or drops it (None)."""

    def apply(state: dict[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, Any] = dict(state)
        if value is None:
            out.pop(key)
        else:
            out[key] = value(state[key]) if callable(value) else value
        return out

    return apply


def drop_prefix(prefix: str) -> Mutation:
    return lambda state: {k: v for k, v in state.items() if not k.startswith(prefix)}


def permuted(change: Callable[[np.ndarray], np.ndarray]) -> Mutation:
    return lambda state: {**state, "batches/permutation": change(state["batches/permutation"].copy())}


def _dup(p: np.ndarray) -> np.ndarray:
    p[0] = p[1]
    return p


def _out_of_range(p: np.ndarray) -> np.ndarray:
    p[3] = len(p) + 5
    return p


def _negative(p: np.ndarray) -> np.ndarray:
    p[0] = -1
    return p


# id -> (spec, mutation, fragments of the message, also refused by eval)
CASES: dict[str, tuple[str, Mutation, tuple[str, ...], bool]] = {
    # weights: what eval reads too
    "pickled_member": (
        "xor",
        lambda s: {**s, W: np.array([{"code": "os.system"}, None], dtype=object)},
        ("entry 'param/net.0.weight' holds Python objects (a pickled array)", "pickles are never loaded"),
        True,
    ),
    "string_parameter": (
        "xor",
        lambda s: {**s, W: np.full((2, 8), "a")},
        ("entry 'param/net.0.weight' is an array of text of shape (2, 8)", "needs a float array"),
        True,
    ),
    "complex_parameter": (
        "xor",
        lambda s: {**s, W: s[W].astype(np.complex128)},
        ("entry 'param/net.0.weight' is a complex128 array of shape (2, 8); parameter 'net.0.weight' needs a float",),
        True,
    ),
    "bool_parameter": (
        "xor",
        lambda s: {**s, W: s[W] > 0},
        ("entry 'param/net.0.weight' is a bool array of shape (2, 8)",),
        True,
    ),
    "integer_parameter": ("xor", lambda s: {**s, W: np.ones((2, 8), np.int64)}, ("is a int64 array",), True),
    "nan_parameter": (
        "xor",
        lambda s: {**s, W: np.where(np.arange(16).reshape(2, 8) < 3, np.nan, s[W])},
        ("entry 'param/net.0.weight' holds 3 NaN or infinite values",),
        True,
    ),
    "missing_parameter": (
        "xor",
        edit("param/net.0.weight", None),
        ("has no parameter 'net.0.weight' (entry 'param/net.0.weight')", "another spec"),
        True,
    ),
    "wrong_shape_parameter": (
        "xor",
        lambda s: {**s, W: np.zeros((3, 8), np.float32)},
        ("entry 'param/net.0.weight': parameter 'net.0.weight' has shape (2, 8) in the spec but (3, 8)",),
        True,
    ),
    "extra_parameter": (
        "xor",
        lambda s: {**s, "param/net.5.weight": np.zeros(3, np.float32)},
        ("unexpected entry 'param/net.5.weight'", "no such parameter"),
        True,
    ),
    # steps and positions
    "non_integer_step": (
        "xor",
        edit("meta/step", np.array(2.5)),
        ("entry 'meta/step' is 2.5 (float64), not a single integer",),
        False,
    ),
    "string_step": (
        "xor",
        edit("meta/step", np.array("5")),
        ("entry 'meta/step' is text '5', not a single integer",),
        False,
    ),
    "negative_step": (
        "xor",
        edit("meta/step", np.array(-3)),
        ("entry 'meta/step' is -3; it must be an integer >= 0",),
        False,
    ),
    "missing_step": ("xor", edit("meta/step", None), ("entry 'meta/step' is missing",), False),
    "window_out_of_range": (
        "xor",
        edit("meta/window", np.array(3)),
        ("entry 'meta/window' is 3; it must be an integer in [0, 1)",),
        False,
    ),
    # random generators
    "short_rng": (
        "xor",
        edit("rng/graph", np.array([1, 2, 3])),
        ("entry 'rng/graph': a random generator's state is 6 numbers",),
        False,
    ),
    "float_rng": (
        "xor",
        edit("rng/graph", np.linspace(0, 1, 6)),
        ("entry 'rng/graph'", "6 unsigned integers, not float64"),
        False,
    ),
    "rng_flags": (
        "xor",
        edit("rng/graph", np.array([1, 2, 3, 4, 7, 9], np.uint64)),
        ("entry 'rng/graph'", "has_uint32=7"),
        False,
    ),
    "negative_rng": (
        "xor",
        edit("batches/rng", np.array([1, 2, 3, 4, 0, -9])),
        ("entry 'batches/rng'", "negative"),
        False,
    ),
    "noise_rng": ("gan_ring", edit("noise/z/rng", np.array(["garbage"])), ("entry 'noise/z/rng'",), False),
    # optimizer state
    "wrong_shape_optimizer_state": (
        "xor",
        edit("opt/opt/net.0.weight/exp_avg", np.zeros((3, 8))),
        ("optimizer 'opt'", "'opt/opt/net.0.weight/exp_avg' has shape (3, 8)", "needs a float array of shape (2, 8)"),
        False,
    ),
    "gan_wrong_shape_optimizer_state": (
        "gan_ring",
        lambda s: {**s, "opt/d_opt/D.0.weight/exp_avg": np.zeros((3, 128))},
        ("optimizer 'd_opt'", "'opt/d_opt/D.0.weight/exp_avg' has shape (3, 128)", "parameter 'D.0.weight'"),
        False,
    ),
    "missing_optimizer_state": (
        "xor",
        edit("opt/opt/net.0.weight/exp_avg_sq", None),
        ("the state has no 'opt/opt/net.0.weight/exp_avg_sq' for parameter 'net.0.weight'",),
        False,
    ),
    "missing_optimizer": (
        "xor",
        drop_prefix("opt/"),
        ("optimizer 'opt'", "(entry 'opt/opt/optimizer' is missing)"),
        False,
    ),
    "other_optimizer_type": (
        "xor",
        edit("opt/opt/optimizer", np.array("sgd")),
        ("saved by optimizer 'sgd', not 'adam' (entry 'opt/opt/optimizer')",),
        False,
    ),
    "float_optimizer_step": (
        "xor",
        edit("opt/opt/step/net.2.bias", np.array(1.5)),
        ("'opt/opt/step/net.2.bias' must be a non-negative integer, got 1.5 (float64)",),
        False,
    ),
    "string_learning_rate": (
        "xor",
        edit("opt/opt/hyper/lr", np.array("x")),
        ("'opt/opt/hyper/lr' holds text 'x', not a float",),
        False,
    ),
    "complex_betas": (
        "xor",
        edit("opt/opt/hyper/betas", lambda b: b.astype(np.complex128)),
        ("'opt/opt/hyper/betas' holds a complex128 array of shape (2,), not a pair",),
        False,
    ),
    "nan_optimizer_state": (
        "xor",
        edit("opt/opt/net.2.weight/exp_avg", lambda a: a * np.nan),
        ("'opt/opt/net.2.weight/exp_avg' holds NaN or infinite values",),
        False,
    ),
    "foreign_optimizer_entry": (
        "xor",
        lambda s: {**s, "opt/opt/net.9.weight/exp_avg": np.zeros(2)},
        ("unexpected entries ['opt/opt/net.9.weight/exp_avg']",),
        False,
    ),
    "schedule_negative_epoch": (
        "gan_ring",
        edit("sched/d_opt/last_epoch", np.array(-1)),
        ("the schedule of optimizer 'd_opt'", "sched/d_opt/last_epoch must be an integer >= 0"),
        False,
    ),
    "schedule_string_hyper": (
        "gan_ring",
        edit("sched/g_opt/hyper/T_max", np.array("x")),
        ("'sched/g_opt/hyper/T_max' holds text 'x', not a number",),
        False,
    ),
    # data position
    "permutation_out_of_range": (
        "xor",
        permuted(_out_of_range),
        ("entry 'batches/permutation' is not a permutation of 0..63",),
        False,
    ),
    "permutation_with_duplicates": (
        "xor",
        permuted(_dup),
        ("entry 'batches/permutation' is not a permutation of 0..63",),
        False,
    ),
    "negative_permutation": ("xor", permuted(_negative), ("entry 'batches/permutation' is not a permutation",), False),
    "short_permutation": (
        "xor",
        permuted(lambda p: p[:10]),
        ("('batches/permutation') covers 10 samples, but the data has 64",),
        False,
    ),
    "float_permutation": (
        "xor",
        permuted(lambda p: p.astype(float)),
        ("entry 'batches/permutation' is a float64 array",),
        False,
    ),
    "position_out_of_range": (
        "xor",
        edit("batches/position", np.array(1000)),
        ("entry 'batches/position' is 1000; it must be an integer in [0, 64)",),
        False,
    ),
    "negative_epoch": ("xor", edit("batches/epoch", np.array(-1)), ("entry 'batches/epoch' is -1",), False),
    "wrong_shape_batch": (
        "xor",
        edit("batch/x", np.zeros((32, 3), np.float32)),
        ("entry 'batch/x' is a float32 array of shape (32, 3); the training field 'x' has float32 rows of shape (2,)",),
        False,
    ),
    "unknown_entry": (
        "xor",
        lambda s: {**s, "junk": np.array(1)},
        ("unexpected entry 'junk': no part of the spec wrote it",),
        False,
    ),
}


def resume(run: pathlib.Path, name: str, *extra: str) -> Result:
    return invoke("train", spec(name), "--out", run, "--resume", "--set", "train.steps=8", *SETS[name], "-q", *extra)


def copy_run(runs: pathlib.Path, name: str, tmp_path: pathlib.Path) -> pathlib.Path:
    run = tmp_path / "run"
    shutil.copytree(runs / name, run)
    return run


@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_refuses_a_bad_checkpoint_and_keeps_the_run(
    case: str, runs: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    name, mutate, fragments, _ = CASES[case]
    run = copy_run(runs, name, tmp_path)
    last = run / "checkpoints/last.npz"
    write(last, mutate(read(last)))
    before = snapshot(run)
    refused(resume(run, name), f"{last}: ", *fragments)
    assert snapshot(run) == before  # run.json, metrics, both checkpoints: every byte as it was


@pytest.mark.parametrize("case", sorted(c for c, v in CASES.items() if v[3]))
def test_eval_refuses_a_bad_checkpoint(case: str, runs: pathlib.Path, tmp_path: pathlib.Path) -> None:
    name, mutate, fragments, _ = CASES[case]
    bad = tmp_path / "bad.npz"
    write(bad, mutate(read(runs / name / "checkpoints/last.npz")))
    refused(invoke("eval", spec(name), "--checkpoint", bad, *SETS[name]), str(bad), *fragments)


def test_eval_ignores_what_only_a_resume_needs(runs: pathlib.Path, tmp_path: pathlib.Path) -> None:
    # eval reads weights only: a bad optimizer state or step does not concern it
    bad = tmp_path / "bad.npz"
    write(bad, CASES["wrong_shape_optimizer_state"][1](read(runs / "xor/checkpoints/last.npz")))
    assert invoke("eval", spec("xor"), "--checkpoint", bad, *SETS["xor"]).exit_code == 0


def test_notes_under_meta_do_not_stop_a_resume(runs: pathlib.Path, tmp_path: pathlib.Path) -> None:
    # meta/ is the run's notebook (spec_hash): a note the spec does not know restores nothing
    run = copy_run(runs, "xor", tmp_path)
    last = run / "checkpoints/last.npz"
    write(last, {**read(last), "meta/written_by": np.array("a later onlytorch")})
    result = resume(run, "xor")
    assert result.exit_code == 0, result.output
    assert int(read(last)["meta/step"]) == 8


def test_a_checkpoint_of_another_optimizer_type(runs: pathlib.Path, tmp_path: pathlib.Path) -> None:
    run = copy_run(runs, "xor", tmp_path)
    before = snapshot(run)
    out = refused(resume(run, "xor", "--set", "optimizers.opt.type=sgd"), "the spec changed", "--force")
    out = refused(resume(run, "xor", "--set", "optimizers.opt.type=sgd", "--force"))
    assert "optimizer 'opt': the state was saved by optimizer 'adam', not 'sgd' (entry 'opt/opt/optimizer')" in out
    assert snapshot(run) == before


# ------------------------------------------------------------------ files that are not checkpoints


def npz_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def forged_sizes(data: bytes, claimed: int) -> bytes:
    """A one-member zip whose local header and directory claim `claimed` unpacked bytes."""
    out = bytearray(data)
    local = out.index(b"PK\x03\x04")
    out[local + 22 : local + 26] = struct.pack("<I", claimed)
    central = out.index(b"PK\x01\x02")
    out[central + 24 : central + 28] = struct.pack("<I", claimed)
    return bytes(out)


def _flip_crc_guarded_byte(good: bytes) -> bytes:
    data = bytearray(good)
    at = good.index(np.asarray(read_bytes_state(good)[W]).tobytes()[:8])
    data[at] ^= 0x40
    return bytes(data)


def read_bytes_state(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


# id -> (bytes from the good checkpoint's bytes, message fragments, env bound or None)
FILES: dict[str, tuple[Callable[[bytes], bytes], tuple[str, ...], int | None]] = {
    "truncated": (lambda b: b[: len(b) // 2], ("not an .npz archive (truncated",), None),
    "empty": (lambda b: b"", ("not an .npz archive",), None),
    "flipped_byte": (_flip_crc_guarded_byte, ("Bad CRC-32",), None),
    "not_an_array_member": (
        lambda b: npz_bytes({"notes.txt": b"hello"}),
        ("entry 'notes.txt' is not a numpy array",),
        None,
    ),
    "header_claims_16_gib": (
        lambda b: npz_bytes({f"{W}.npy": npy_header((2**31,))}),
        ("array 'param/net.0.weight' claims shape (2147483648,) of float64 (16.0 GiB)", "refused before reading"),
        None,
    ),
    "header_claims_more_than_it_holds": (
        lambda b: npz_bytes({f"{W}.npy": npy_header((1000,)) + b"\0" * 64}),
        ("array 'param/net.0.weight' claims shape (1000,)", "holds only"),
        None,
    ),
    "zip_bomb": (
        lambda b: npz_bytes({f"{W}.npy": npy_header((8 * 2**20,)) + bytes(64 * 2**20)}, zipfile.ZIP_DEFLATED),
        ("array 'param/net.0.weight' unpacks to 64.0 MiB, over the 32.0 MiB limit", "ONLYTORCH_MAX_CHECKPOINT_BYTES"),
        32 * 2**20,
    ),
    "forged_inflation": (
        lambda b: forged_sizes(
            npz_bytes({f"{W}.npy": npy_header((2**17,)) + bytes(2**20)}, zipfile.ZIP_DEFLATED), 4_000_000_000
        ),
        ("entry 'param/net.0.weight' claims to inflate", "a zip bomb or a forged size"),
        6 * 2**30,
    ),
    "file_over_the_bound": (
        lambda b: b,
        ("over the 1000 bytes limit for checkpoint", "ONLYTORCH_MAX_CHECKPOINT_BYTES"),
        1000,
    ),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_unreadable_files_are_refused_before_reading(
    case: str, runs: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, fragments, bound = FILES[case]
    if bound is not None:
        monkeypatch.setenv(ckpt.MAX_BYTES_ENV, str(bound))
    good = (runs / "xor/checkpoints/last.npz").read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(make(good))
    refused(invoke("eval", spec("xor"), "--checkpoint", bad, *SETS["xor"]), f"cannot read checkpoint {bad}", *fragments)
    run = copy_run(runs, "xor", tmp_path)
    (run / "checkpoints/last.npz").write_bytes(bad.read_bytes())
    before = snapshot(run)
    refused(resume(run, "xor"), "cannot resume", f"cannot read checkpoint {run / 'checkpoints/last.npz'}", *fragments)
    assert snapshot(run) == before


def test_a_directory_as_the_checkpoint(runs: pathlib.Path, tmp_path: pathlib.Path) -> None:
    run = copy_run(runs, "xor", tmp_path)
    last = run / "checkpoints/last.npz"
    last.unlink()
    last.mkdir()
    refused(resume(run, "xor"), f"cannot read checkpoint {last}: it is a directory, not a regular file")


def test_the_size_bound_setting_is_checked(runs: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ckpt.MAX_BYTES_ENV, "lots")
    with pytest.raises(ckpt.CheckpointError, match="ONLYTORCH_MAX_CHECKPOINT_BYTES must be a number of bytes"):
        ckpt.load(runs / "xor/checkpoints/last.npz")
    monkeypatch.delenv(ckpt.MAX_BYTES_ENV)
    assert 0 < ckpt.max_bytes() <= ckpt.DEFAULT_MAX_BYTES


def fifo_checkpoint(runs: pathlib.Path, tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    run = copy_run(runs, "xor", tmp_path)
    last = run / "checkpoints/last.npz"
    last.unlink()
    os.mkfifo(last)
    return run, last


def test_a_fifo_is_refused_without_blocking_by_resume(runs: pathlib.Path, tmp_path: pathlib.Path) -> None:
    # Caught a hang: np.load opened the FIFO and waited forever for a writer.
    run, last = fifo_checkpoint(runs, tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", "from onlytorch_cli.main import cli; cli()"]
        + ["train", spec("xor"), "--out", str(run), "--resume", *SETS["xor"], "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 2, done.stderr
    assert f"cannot read checkpoint {last}: it is a FIFO (named pipe), not a regular file" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_fifo_is_refused_without_blocking_by_eval(runs: pathlib.Path, tmp_path: pathlib.Path) -> None:
    _, last = fifo_checkpoint(runs, tmp_path)

    def hung(signum: int, frame: Any) -> None:
        raise TimeoutError("eval blocked on the FIFO")

    previous = signal.signal(signal.SIGALRM, hung)  # a blocked open() is interrupted by the alarm
    signal.alarm(20)
    try:
        result = invoke("eval", spec("xor"), "--checkpoint", last, *SETS["xor"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    refused(result, f"cannot read checkpoint {last}: it is a FIFO (named pipe), not a regular file")


# ------------------------------------------------------------------ the API: check all, then apply


def test_a_refused_checkpoint_leaves_the_trainer_as_it_was(runs: pathlib.Path, tmp_path: pathlib.Path) -> None:
    # The bad entry is one of the last ones checked: weights and optimizer state would have been
    # applied already by a restore that checked as it went.
    compiled, _ = compile_file(spec("gan_ring"), [("data.train.n", 256)])
    trainer = Trainer(compiled)
    for _ in range(2):
        trainer.run_iteration()
    before = trainer.state()
    bad = tmp_path / "bad.npz"
    write(bad, edit("noise/z/rng", np.array([1, 2]))(read(runs / "gan_ring/checkpoints/last.npz")))
    with pytest.raises(ckpt.CheckpointError, match=rf"^{bad}: entry 'noise/z/rng'"):
        trainer.restore(ckpt.load(bad))
    after = trainer.state()
    assert sorted(after) == sorted(before)
    assert all(after[k].tobytes() == before[k].tobytes() for k in before)


def test_restore_weights_names_the_source_of_a_plain_dict() -> None:
    compiled, _ = compile_file(spec("xor"), [("data.train.n", 64)])
    trainer = Trainer(compiled)
    state = trainer.state()
    state[W] = state[W].astype(np.complex64)
    with pytest.raises(ckpt.CheckpointError, match=r"^the checkpoint: entry 'param/net.0.weight' is a complex64"):
        trainer.restore_weights(state)


# ------------------------------------------------------------------ gym sources: rollouts and replay buffers

RL = {
    "ppo_cartpole": [("data.train.envs", 2), ("data.train.steps", 32), ("data.batch_size", 32)],
    "dqn_cartpole": [("data.train.warmup", 64), ("data.train.env_steps", 16), ("data.batch_size", 16)],
}


@pytest.fixture(scope="module")
def rl_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """Two iterations of PPO (a rollout) and of DQN (a replay buffer), checkpointed."""
    pytest.importorskip("gymnasium")
    folder = tmp_path_factory.mktemp("bad-ckpt-rl")
    out = {}
    for name, overrides in RL.items():
        compiled, _ = compile_file(spec(name), overrides)
        trainer = Trainer(compiled)
        for _ in range(2):
            trainer.run_iteration()
        out[name] = ckpt.save(folder / f"{name}.npz", trainer.state())
    return out


def _bad_action(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[5] = 7
    return a


RL_CASES: dict[str, tuple[str, Mutation, str]] = {
    "rollout_action_out_of_range": (
        "ppo_cartpole",
        edit("live/buffer/action", _bad_action),
        "entry 'live/buffer/action' holds 7; its values must be below 2",
    ),
    "rollout_permutation": (
        "ppo_cartpole",
        edit("live/batches/permutation", lambda p: np.zeros_like(p)),
        "entry 'live/batches/permutation' is not a permutation of 0..63",
    ),
    "rollout_missing_log_prob": (
        "ppo_cartpole",
        edit("live/buffer/log_prob", None),
        "entry 'live/buffer/log_prob' is missing",
    ),
    "rollout_float_collections": (
        "ppo_cartpole",
        edit("live/collections", np.array(2.0)),
        "entry 'live/collections' is 2.0 (float64), not a single integer",
    ),
    "environment_rng": ("ppo_cartpole", edit("live/env/env1/rng", np.array([-1] * 6)), "entry 'live/env/env1/rng'"),
    "environment_observations": (
        "ppo_cartpole",
        edit("live/env/obs", np.zeros((2, 5), np.float32)),
        "entry 'live/env/obs' is a float32 array of shape (2, 5); the CartPole-v1 observations of 2 environments",
    ),
    "environment_state_missing": (
        "dqn_cartpole",
        edit("live/env/env0/state", None),
        "the checkpoint holds no state of the CartPole-v1 environments ('live/env/env0/state'",
    ),
    "environment_negative_steps": (
        "dqn_cartpole",
        edit("live/env/steps", np.array(-5)),
        "entry 'live/env/steps' is -5",
    ),
    "episode_lengths": (
        "dqn_cartpole",
        edit("live/env/lengths", lambda a: a[:-1]),
        "entry 'live/env/lengths' is a int64 array of shape",
    ),
    "replay_counters": (
        "dqn_cartpole",
        edit("live/counters", np.array([10**9, 0, 0])),
        "entry 'live/counters' holds size 1000000000 and position 0, which a buffer of capacity",
    ),
    "replay_rows": (
        "dqn_cartpole",
        edit("live/buffer/obs", lambda a: a[:-1]),
        "entry 'live/buffer/obs' is a float32 array of shape (95, 4); the buffer's obs needs a float array of shape (96, 4)",
    ),
    "replay_unknown_entry": (
        "dqn_cartpole",
        lambda s: {**s, "live/buffer/extra": np.zeros(3)},
        "unexpected entry 'live/buffer/extra'",
    ),
}


@pytest.mark.parametrize("case", sorted(RL_CASES))
def test_gym_source_state_is_checked_before_anything_is_restored(
    case: str, rl_checkpoints: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    name, mutate, fragment = RL_CASES[case]
    bad = tmp_path / "bad.npz"
    write(bad, mutate(read(rl_checkpoints[name])))
    compiled, _ = compile_file(spec(name), RL[name])
    trainer = Trainer(compiled)
    trainer.run_iteration()
    before = trainer.state()
    with pytest.raises(ckpt.CheckpointError) as info:
        trainer.restore(ckpt.load(bad))
    assert str(info.value).startswith(f"{bad}: ") and fragment in str(info.value), str(info.value)
    after = trainer.state()
    assert sorted(after) == sorted(before) and all(after[k].tobytes() == before[k].tobytes() for k in before)


def test_gym_source_state_that_is_good_restores(rl_checkpoints: dict[str, pathlib.Path]) -> None:
    for name, path in rl_checkpoints.items():
        compiled, _ = compile_file(spec(name), RL[name])
        trainer = Trainer(compiled)
        trainer.restore(ckpt.load(path))
        assert trainer.step == 2
        trainer.run_iteration()


# ------------------------------------------------------------------ property: mutated checkpoints

_SCALE = os.environ.get("ONLYTORCH_PROPERTY_SCALE")
SCALE = float(_SCALE or "1")
SETTINGS: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    "derandomize": _SCALE is None,
    "database": None,
}


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


XOR_OVERRIDES = [("data.train.n", 64)]
_BASE: dict[str, Any] = {}


def base() -> dict[str, Any]:
    """A valid xor checkpoint (3 steps, written as the CLI writes it), its bytes, and the state
    after 2 more steps from it: what a correct resume reaches."""
    if not _BASE:
        compiled, _ = compile_file(spec("xor"), XOR_OVERRIDES)
        trainer = Trainer(compiled)
        for _ in range(3):
            trainer.run_iteration()
        state = trainer.state()
        folder = pathlib.Path(tempfile.mkdtemp(prefix="onlytorch-bad-ckpt-"))
        ckpt.save(folder / "base.npz", state)
        _BASE.update(state=state, bytes=(folder / "base.npz").read_bytes(), folder=folder)
        _BASE["after"] = continued(ckpt.load(folder / "base.npz"))
    return _BASE


def continued(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    compiled, _ = compile_file(spec("xor"), XOR_OVERRIDES)
    trainer = Trainer(compiled)
    trainer.restore(state)
    for _ in range(2):
        trainer.run_iteration()
    return trainer.state()


DTYPES = ["U3", "S2", "complex128", "bool", "int8", "int64", "uint64", "float16", "float32", "float64"]


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, Any]:
    keys = sorted(base()["state"])
    kind = draw(st.sampled_from(["drop", "add", "dtype", "shape", "value", "truncate", "flip"]))
    if kind == "drop":
        return kind, draw(st.sampled_from(keys))
    if kind == "add":
        prefix = draw(st.sampled_from(["", "param/", "opt/opt/", "batches/", "meta/", "noise/z/", "live/"]))
        return kind, (prefix + draw(st.sampled_from(["x", "net.0.weight", "step", "rng"])), draw(st.integers(0, 3)))
    if kind == "dtype":
        return kind, (draw(st.sampled_from(keys)), draw(st.sampled_from(DTYPES)))
    if kind == "shape":
        return kind, (draw(st.sampled_from(keys)), draw(st.sampled_from(["scalar", "extra_axis", "shorter", "longer"])))
    if kind == "value":
        special = draw(st.sampled_from([np.nan, np.inf, -1, 2**40, 0.5, 10**6]))
        return kind, (draw(st.sampled_from(keys)), special)
    size = len(base()["bytes"])
    if kind == "truncate":
        return kind, draw(st.integers(0, size - 1))
    return kind, (draw(st.integers(0, size - 1)), draw(st.integers(0, 7)))


def mutated_file(mutation: tuple[str, Any], path: pathlib.Path) -> dict[str, Any] | None:
    """Write the mutated checkpoint; returns its entries (None for byte-level mutations)."""
    with np.errstate(invalid="ignore", over="ignore"):  # casting NaN or 2**40 to integers is the point
        return _mutated_file(mutation, path)


def _mutated_file(mutation: tuple[str, Any], path: pathlib.Path) -> dict[str, Any] | None:
    kind, arg = mutation
    state: dict[str, Any] = dict(base()["state"])
    if kind in ("truncate", "flip"):
        data = bytearray(base()["bytes"])
        if kind == "truncate":
            data = data[:arg]
        else:
            data[arg[0]] ^= 1 << arg[1]
        path.write_bytes(bytes(data))
        return None
    if kind == "drop":
        state.pop(arg)
    elif kind == "add":
        state[arg[0]] = np.zeros((arg[1],) * min(arg[1], 2))
    elif kind == "dtype":
        key, dtype = arg
        try:
            state[key] = state[key].astype(dtype)
        except (ValueError, TypeError, OverflowError):
            state[key] = np.array("x").astype(dtype) if dtype[0] in "US" else np.zeros(1, dtype)
    elif kind == "shape":
        key, how = arg
        a = state[key]
        state[key] = {
            "scalar": lambda: a.reshape(-1)[:1].reshape(()) if a.size else np.zeros((), a.dtype),
            "extra_axis": lambda: a[None],
            "shorter": lambda: a.reshape(-1)[:-1],
            "longer": lambda: np.concatenate([a.reshape(-1), a.reshape(-1)[:1]]),
        }[how]()
    else:
        key, special = arg
        a = state[key]
        try:
            filled = np.full(a.shape, special).astype(a.dtype) if a.dtype.kind in "biuf" else np.full(a.shape, special)
        except (ValueError, OverflowError):
            filled = np.full(a.shape, special)
        state[key] = filled
    write(path, state)
    return state


def same_values(state: dict[str, Any]) -> bool:
    good = base()["state"]
    return set(state) - {"meta/spec_hash"} == set(good) - {"meta/spec_hash"} and all(
        np.asarray(state[k]).shape == good[k].shape
        and np.asarray(state[k]).dtype.kind not in "USO"
        and np.array_equal(np.asarray(state[k]), good[k], equal_nan=True)
        for k in good
        if k in state and good[k].dtype.kind not in "US"
    )


def check_mutation(mutation: tuple[str, Any], path: pathlib.Path) -> None:
    mutated_file(mutation, path)
    compiled, _ = compile_file(spec("xor"), XOR_OVERRIDES)
    trainer = Trainer(compiled)
    fresh = trainer.state()
    try:
        entries = ckpt.load(path)
        trainer.restore(entries)
    except ckpt.CheckpointError as e:
        message = str(e)
        assert str(path) in message and "Traceback" not in message and len(message) < 1000, message
        after = trainer.state()
        assert all(after[k].tobytes() == fresh[k].tobytes() for k in fresh), "a refused checkpoint changed the trainer"
        return
    try:
        for _ in range(2):
            trainer.run_iteration()
    except Diverged:
        return  # accepted values that diverge (e.g. a huge weight): reported as a divergence, exit 3
    got = trainer.state()
    assert sorted(got) == sorted(base()["after"])
    if same_values(entries):
        # the same numbers in another dtype (int32 steps, float64 weights), or a flipped byte the
        # archive does not need (a timestamp): the same run, bit for bit
        differ = [k for k, v in base()["after"].items() if got[k].tobytes() != v.tobytes()]
        assert not differ, (mutation, differ)


@settings(max_examples=examples(60), **SETTINGS)
@given(mutation=mutations())
def test_mutated_checkpoints_are_refused_clearly_or_resume_correctly(mutation: tuple[str, Any]) -> None:
    check_mutation(mutation, base()["folder"] / "mutant.npz")


@settings(max_examples=examples(6), **SETTINGS)
@given(mutation=mutations())
def test_mutated_checkpoints_through_the_cli(mutation: tuple[str, Any]) -> None:
    folder = pathlib.Path(tempfile.mkdtemp(prefix="onlytorch-bad-ckpt-cli-"))
    try:
        run = folder / "run"
        result = invoke("train", spec("xor"), "--out", run, "--set", "train.steps=3", *SETS["xor"], "-q")
        assert result.exit_code == 0, result.output
        mutated_file(mutation, run / "checkpoints/last.npz")
        before = snapshot(run)
        result = resume(run, "xor")
        assert "Traceback" not in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), (result.exception, result.output)
        assert result.exit_code in (0, 2, 3), (result.exit_code, result.output)
        if result.exit_code == 2:
            assert str(run / "checkpoints/last.npz") in result.output, result.output
            assert snapshot(run) == before
        else:
            assert json.loads((run / "run.json").read_text())["status"] in ("completed", "diverged")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------ bad values reaching ops


def labels_graph(op: str) -> tuple[ot.Graph, Any, Any, Any]:
    g = ot.Graph(dtype="float64")
    x = g.input("logits", shape=(None, 3))
    y = g.input("labels", shape=(None,), dtype="int64")
    loss = g.cross_entropy(x, y) if op == "cross_entropy" else g.nll(g.log_softmax(x, axis=-1), y)
    g.set_value(x, np.zeros((4, 3)))
    return g, x, y, loss


@pytest.mark.parametrize("op", ["cross_entropy", "nll"])
@pytest.mark.parametrize(
    "labels, shown",
    [
        ([0, 2, 5, 1], "got 5 at index 2"),
        ([0, -1, 1, 1], "got -1 at index 1"),
        ([3, 3, 0, 0], "got 3 at index 0 (2 of the 4 labels"),
    ],
)
def test_labels_out_of_range_name_the_node_the_value_and_the_range(op: str, labels: list[int], shown: str) -> None:
    g, _, y, loss = labels_graph(op)
    g.set_value(y, np.array(labels))
    with pytest.raises(ot.GraphError) as info:
        g.forward_node(loss)
    assert f"{op}: labels 'labels' must lie in [0, 3) (the classes on the logits' last axis), {shown}" in str(
        info.value
    )
    g.set_value(y, np.array([0, 1, 2, 0]))  # the graph stays usable
    assert np.isfinite(g.forward_node(loss)).all()


def test_slice_with_step_zero_in_the_api() -> None:
    g = ot.Graph()
    x = g.input("x", shape=(None, 4))
    for make in (lambda: x[:, ::0], lambda: g.index(x, key=(slice(None), slice(0, 3, 0))), lambda: x[::0]):
        with pytest.raises(
            ot.GraphError,
            match=r"cannot build node .*of 'x'.*slice (::0|0:3:0) has step 0; a step must be a non-zero integer",
        ):
            make()


def test_slice_with_step_zero_in_a_spec(tmp_path: pathlib.Path) -> None:
    text = (SPECS / "xor.yaml").read_text(encoding="utf-8").replace("  logits: net(x)\n", "  logits: net(x)[:, ::0]\n")
    path = tmp_path / "step0.yaml"
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index("  logits: net(x)[:, ::0]") + 1
    result = invoke("validate", path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{path}:{line}:23: E-ARG a slice step must be a non-zero integer (x[::2], x[::-1]), not 0" in result.output


def test_labels_out_of_range_fail_a_training_run(tmp_path: pathlib.Path) -> None:
    # A head of 5 classes for the 10 digits: labels 5..9 reach cross_entropy at run time, where
    # validate (static shapes, no data) cannot see them. A failed run: exit 1, run.json says why.
    run = tmp_path / "run"
    result = invoke("train", spec("digits"), "--out", run, "--set", "train.steps=3", "--set", "modules.mlp.3.linear=5")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    message = "cross_entropy: labels 'y' must lie in [0, 5) (the classes on the logits' last axis), got"
    assert message in result.output
    summary = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert summary["status"] == "failed" and message in summary["message"]


def test_a_pickled_array_smaller_than_its_element_count_is_named_as_a_pickle(tmp_path):
    # The pickle of 1000 Nones is far smaller than 1000 pointers: the header's byte checks must not
    # call it damaged before the pickle is recognised for what it is.
    from onlytorch import checkpoint as ckpt_mod

    objects = np.empty(1000, dtype=object)
    path = tmp_path / "pickled.npz"
    np.savez(path, **{"param/w": objects})
    with pytest.raises(ckpt_mod.CheckpointError, match=r"entry 'param/w' holds Python objects \(a pickled array\)"):
        ckpt_mod.load(path)
