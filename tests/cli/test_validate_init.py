"""``onlytorch validate --init CKPT`` and ``onlytorch graph --init CKPT``: a spec checked together
with the checkpoints ``train --init`` will start it from, with train's checks and train's
diagnostics (compile_file's init=), read from the checkpoint's header only."""

from __future__ import annotations

import pathlib

import pytest

from . import fails, invoke, ok, spec

XOR = pathlib.Path(spec("xor")).read_text(encoding="utf-8")
WIDE = "  net: [{linear: 16}, tanh, {linear: 1}]"  # xor's net is 2-8-1: its checkpoint does not fit


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> pathlib.Path:  # type: ignore[no-untyped-def]
    """A checkpoint of a short xor run, xor's spec beside it and a wider variant that it does not fit."""
    here = tmp_path_factory.mktemp("validate-init")
    ok("train", spec("xor"), "--out", here / "run", "--set", "train.steps=2", "-q")
    (here / "xor.yaml").write_text(XOR, encoding="utf-8")
    assert "  net: [{linear: 8}, tanh, {linear: 1}]" in XOR
    (here / "wide.yaml").write_text(XOR.replace("  net: [{linear: 8}, tanh, {linear: 1}]", WIDE), encoding="utf-8")
    return here


def test_a_checkpoint_that_does_not_fit_is_refused_as_train_refuses_it(folder):
    ckpt = folder / "run/checkpoints/last.npz"
    out = fails(2, "validate", folder / "wide.yaml", "--init", ckpt).output
    misfit = (
        f"W-INIT-SKIP --init {ckpt}: module net is not loaded: parameter net.0.weight has shape (2, 16) here "
        "but param/net.0.weight has shape (2, 8) in the checkpoint"
    )
    refusal = (
        f"E-INIT-MODULE --init {ckpt}: no module of the spec can be loaded from the checkpoint: net has its "
        "name there but not its shapes (W-INIT-SKIP)"
    )
    assert misfit in out and refusal in out and "invalid (1 error, 1 warning)" in out
    # the same diagnostics train gives before refusing the run
    trained = fails(2, "train", folder / "wide.yaml", "--init", ckpt, "--out", folder / "never").output
    assert misfit in trained and refusal in trained and not (folder / "never").exists()
    # without --init the spec is valid: the checkpoint is what validate checked
    ok("validate", folder / "wide.yaml", "-q")


def test_a_checkpoint_that_fits_validates_and_the_report_shows_it(folder):
    ckpt = folder / "run/checkpoints/last.npz"
    out = ok("validate", folder / "xor.yaml", "--init", ckpt, "--init", ckpt).output
    line = f"init: net from --init {ckpt} ({ckpt})"
    assert out.count(line) == 2  # repeatable: one entry per --init, in order
    assert "init:" not in ok("validate", folder / "xor.yaml").output


def test_graph_takes_init_with_the_same_checks(folder):
    ckpt = folder / "run/checkpoints/last.npz"
    out = fails(2, "graph", folder / "wide.yaml", "--init", ckpt).output
    assert "E-INIT-MODULE" in out and "fix it before drawing" in out
    drawn = ok("graph", folder / "xor.yaml", "--init", ckpt).output
    assert drawn == ok("graph", folder / "xor.yaml").output


def test_a_missing_init_file_is_a_usage_error(folder):
    result = invoke("validate", folder / "xor.yaml", "--init", folder / "nothing.npz")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_a_checkpoint_with_no_module_of_the_same_name_points_to_an_init_entry(folder):
    """--init loads by name only: when no name matches, the fix is an init: entry with modules:,
    which the hint spells out with this checkpoint (the spec's own init: gets the short hint)."""
    ckpt = folder / "run/checkpoints/last.npz"
    (folder / "renamed.yaml").write_text(
        XOR.replace("  net: [", "  body: [").replace("net(", "body(").replace("[net]", "[body]"), encoding="utf-8"
    )
    out = fails(2, "validate", folder / "renamed.yaml", "--init", ckpt).output
    assert f"E-INIT-MODULE --init {ckpt}: no module of the spec is in the checkpoint under its own name" in out
    assert "invalid (1 error, 0 warnings)" in out
    assert (
        f"hint: --init loads modules by their own names; to rename, write an init: entry in the spec: "
        f"init: [{{checkpoint: {ckpt}, modules: {{IN_CHECKPOINT: HERE}}}}]"
    ) in out
