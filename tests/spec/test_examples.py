"""The example specs in ``specs/``: each compiles cleanly, and its compile report (what
``onlytorch validate`` prints) states the facts of that spec, computed here independently from the
layer sizes: parameter counts per module, shared modules, every node's shape, which modules each
backward of each phase reaches and what each detach cuts off. The Compiled object is checked
directly too: optimizer parameter sets, carries, static shapes, and WGAN-GP's gradient penalty
(a gradient of a gradient, checked against PyTorch)."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest
from example_init import example_overrides

from onlytorch.compile import Compiled, compile_file, compile_text
from onlytorch.compiler.summary import summarize

SPECS = pathlib.Path(__file__).resolve().parents[2] / "specs"
ALL_SPECS = sorted(SPECS.glob("*.yaml"))
KNOWN = (
    "xor",
    "digits",
    "gan_ring",
    "wgan_gp",
    "wgan_gp_grid",
    "multitask",
    "tbptt_sine",
    "a2c_cartpole",
    "ppo_cartpole",
    "dqn_cartpole",
)


# ------------------------------------------------------------------ independent arithmetic


def mlp(n_in: int, *sizes: int) -> int:
    """Weights of a stack of linear layers with biases: n_in -> sizes[0] -> sizes[1] ..."""
    total, prev = 0, n_in
    for s in sizes:
        total += prev * s + s
        prev = s
    return total


def gru(n_in: int, hidden: int) -> int:
    """torch.nn.GRUCell's count: W_ih (3h x in), W_hh (3h x h), b_ih and b_hh (3h each)."""
    return 3 * hidden * (n_in + hidden) + 2 * 3 * hidden


def shape_text(shape: tuple) -> str:
    """(None, 20, 32) -> '(N, 20, 32)'; (None,) -> '(N,)'; () -> '()'."""
    parts = ["N" if d is None else str(d) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


# ------------------------------------------------------------------ the facts of each example

N = None

# name -> (kind, static shape); every named node of the spec, in the report's order.
SHAPES: dict[str, dict[str, tuple[str, tuple]]] = {
    "xor": {
        "x": ("input", (N, 2)),
        "y": ("input", (N, 1)),
        "logits": ("node", (N, 1)),
        "loss": ("loss", ()),
        "accuracy": ("metric", ()),
    },
    "digits": {
        "x": ("input", (N, 64)),
        "y": ("input", (N,)),
        "logits": ("node", (N, 10)),
        "loss": ("loss", ()),
        "accuracy": ("metric", ()),
    },
    "gan_ring": {
        "real": ("input", (N, 2)),
        "z": ("input", (N, 16)),
        "fake": ("node", (N, 2)),
        "d_real": ("node", (N, 1)),
        "d_fake": ("node", (N, 1)),
        "d_loss": ("loss", ()),
        "g_loss": ("loss", ()),
        "d_real_mean": ("metric", ()),
        "d_fake_mean": ("metric", ()),
    },
    "wgan_gp": {
        "real": ("input", (N, 2)),
        "z": ("input", (N, 4)),
        "eps": ("input", (N, 1)),
        "fake": ("node", (N, 2)),
        "x_hat": ("node", (N, 2)),
        "c_real": ("node", (N, 1)),
        "c_fake": ("node", (N, 1)),
        "gp": ("loss", ()),
        "c_loss": ("loss", ()),
        "g_loss": ("loss", ()),
        "wasserstein": ("metric", ()),
    },
    "multitask": {
        "x": ("input", (N, 2)),
        "y": ("input", (N,)),
        "h": ("node", (N, 64)),
        "radius": ("node", (N, 1)),
        "cls_loss": ("loss", ()),
        "reg_loss": ("loss", ()),
        "accuracy": ("metric", ()),
    },
    "a2c_cartpole": {
        "obs": ("input", (N, 4)),
        "act": ("input", (N,)),
        "ret": ("input", (N,)),
        "h": ("node", (N, 64)),
        "logits": ("node", (N, 2)),
        "action": ("node", (N,)),
        "value": ("node", (N,)),
        "advantage": ("node", (N,)),
        "adv_c": ("node", (N,)),
        "adv_n": ("node", (N,)),
        "actor_loss": ("loss", ()),
        "critic_loss": ("loss", ()),
    },
    "ppo_cartpole": {
        "obs": ("input", (N, 4)),
        "act": ("input", (N,)),
        "old_logp": ("input", (N,)),
        "adv": ("input", (N,)),
        "ret": ("input", (N,)),
        "h": ("node", (N, 64)),
        "logits": ("node", (N, 2)),
        "action": ("node", (N,)),
        "action_logp": ("node", (N,)),
        "value": ("node", (N,)),
        "logp": ("node", (N,)),
        "ratio": ("node", (N,)),
        "policy_loss": ("loss", ()),
        "value_loss": ("loss", ()),
        "approx_kl": ("metric", ()),
        "entropy": ("metric", ()),
    },
    "dqn_cartpole": {
        "s": ("input", (N, 4)),
        "a": ("input", (N,)),
        "r": ("input", (N,)),
        "s2": ("input", (N, 4)),
        "done": ("input", (N,)),
        "q": ("node", (N, 2)),
        "greedy": ("node", (N,)),
        "q_taken": ("node", (N,)),
        "target": ("node", (N,)),
        "td": ("loss", ()),
        "q_mean": ("metric", ()),
    },
    "tbptt_sine": {
        "x": ("input", (N, 20, 1)),
        "y": ("input", (N, 20, 1)),
        "h0": ("input", (N, 32)),
        "hs": ("node", (N, 20, 32)),
        "h_last": ("node", (N, 32)),
        "pred": ("node", (N, 20, 1)),
        "loss": ("loss", ()),
    },
}

# module -> (kind, weights, tensors, notes)
MODULES: dict[str, dict[str, tuple[str, int, int, str]]] = {
    "xor": {"net": ("layers", mlp(2, 8, 1), 4, "")},
    "digits": {"mlp": ("layers", mlp(64, 128, 10), 4, "")},
    "gan_ring": {
        # G: 16*128+128 + 128*128+128 + 128*2+2; D is called on real and on fake: shared weights.
        "G": ("layers", 16 * 128 + 128 + 128 * 128 + 128 + 128 * 2 + 2, 6, ""),
        "D": ("layers", mlp(2, 128, 128, 1), 6, "shared: called 2 times"),
    },
    "wgan_gp": {
        "G": ("layers", mlp(4, 128, 128, 2), 6, ""),
        # C(real), C(fake) and C(x_hat) inside the gradient penalty.
        "C": ("layers", mlp(2, 64, 64, 1), 6, "shared: called 3 times"),
    },
    "multitask": {
        "backbone": ("layers", mlp(2, 64, 64), 4, ""),
        # cls_head(h) in cls_loss and again in the accuracy metric.
        "cls_head": ("layers", mlp(64, 2), 2, "shared: called 2 times"),
        "reg_head": ("layers", mlp(64, 1), 2, ""),
    },
    "a2c_cartpole": {
        "body": ("layers", mlp(4, 64, 64), 4, ""),
        "pi": ("layers", mlp(64, 2), 2, ""),
        "v": ("layers", mlp(64, 1), 2, ""),
    },
    "ppo_cartpole": {
        "body": ("layers", mlp(4, 64, 64), 4, ""),
        "pi": ("layers", mlp(64, 2), 2, ""),
        "v": ("layers", mlp(64, 1), 2, ""),
    },
    "dqn_cartpole": {
        # Q(s) in q; Q_target(s2) in the TD target: a copy with its own weights, never trained
        "Q": ("layers", mlp(4, 256, 256, 2), 6, ""),
        "Q_target": ("copy", mlp(4, 256, 256, 2), 6, "target copy of Q (not trained, sync every iteration)"),
    },
    "tbptt_sine": {
        # scan unrolls the cell over the 20 steps of a window.
        "cell": ("cell", gru(1, 32), 4, "shared: called 20 times"),
        "readout": ("layers", mlp(32, 1), 2, ""),
    },
}

# optimizer -> (type, declared lr, schedule or None, modules it updates)
OPTIMIZERS: dict[str, dict[str, tuple[str, float, str | None, list[str]]]] = {
    "xor": {"opt": ("adam", 0.05, None, ["net"])},
    "digits": {"opt": ("adamw", 3e-3, "cosine_annealing_lr", ["mlp"])},
    "gan_ring": {
        "d_opt": ("adam", 1e-3, "cosine_annealing_lr", ["D"]),
        "g_opt": ("adam", 1e-3, "cosine_annealing_lr", ["G"]),
    },
    "wgan_gp": {"c_opt": ("adam", 4e-3, "warmup_cosine", ["C"]), "g_opt": ("adam", 1e-3, "warmup_cosine", ["G"])},
    "multitask": {"opt": ("adam", 1e-2, None, ["backbone", "cls_head", "reg_head"])},
    "tbptt_sine": {"opt": ("adam", 3e-3, None, ["cell", "readout"])},
    "a2c_cartpole": {"opt": ("adam", 3e-3, "linear_lr", ["body", "pi", "v"])},
    "ppo_cartpole": {"opt": ("adam", 1e-3, "linear_lr", ["body", "pi", "v"])},
    "dqn_cartpole": {"opt": ("adam", 2.3e-3, "linear_lr", ["Q"])},
}

# phase -> (repeat, detach, steps, [(loss, retain_graph, modules reached)], {detached: modules cut off})
PHASES: dict[
    str, dict[str, tuple[int, list[str], list[str], list[tuple[str, bool, list[str]]], dict[str, list[str]]]]
] = {
    "xor": {"fit": (1, [], ["opt"], [("loss", False, ["net"])], {})},
    "digits": {"fit": (1, [], ["opt"], [("loss", False, ["mlp"])], {})},
    "gan_ring": {
        "discriminator": (1, ["fake"], ["d_opt"], [("d_loss", False, ["D"])], {"fake": ["G"]}),
        "generator": (1, [], ["g_opt"], [("g_loss", False, ["G"])], {}),
    },
    "wgan_gp": {
        "critic": (5, ["fake"], ["c_opt"], [("c_loss", False, ["C"])], {"fake": ["G"]}),
        "generator": (1, [], ["g_opt"], [("g_loss", False, ["G"])], {}),
    },
    "multitask": {
        "joint": (
            1,
            [],
            ["opt"],
            [("cls_loss", True, ["backbone", "cls_head"]), ("reg_loss", False, ["backbone", "reg_head"])],
            {},
        ),
    },
    "tbptt_sine": {"fit": (1, [], ["opt"], [("loss", False, ["cell", "readout"])], {})},
    # one phase, two backward calls through the shared body: the first retains the graph
    "a2c_cartpole": {
        "a2c": (
            1,
            [],
            ["opt"],
            [("actor_loss", True, ["body", "pi"]), ("critic_loss", False, ["body", "v"])],
            {},
        )
    },
    "ppo_cartpole": {
        "ppo": (
            1,
            [],
            ["opt"],
            [("policy_loss", True, ["body", "pi"]), ("value_loss", False, ["body", "v"])],
            {},
        )
    },
}

# loss -> the weight its backward call puts on it, where not 1
WEIGHTS = {"a2c_cartpole": {"critic_loss": 0.02}, "ppo_cartpole": {"value_loss": 0.25}}

PHASES["dqn_cartpole"] = {"td": (128, [], ["opt"], [("td", False, ["Q"])], {})}

# phase -> epochs (passes over each rollout, in minibatches) where a phase gives them
EPOCHS = {"ppo_cartpole": {"ppo": 5}}

# what the compile report says of a gym training source: (source line, detail lines)
GYM = {
    "a2c_cartpole": [
        "gym.rollout CartPole-v1: observations (4,) -> obs, 2 actions",
        "  each iteration: 8 copies x 16 steps = 128 transitions, acting with action under no_grad; records value = value",
        "  returns and GAE advantages: gamma 0.99, lambda 0.95",
    ],
    "ppo_cartpole": [
        "gym.rollout CartPole-v1: observations (4,) -> obs, 2 actions",
        "  each iteration: 8 copies x 32 steps = 256 transitions, acting with action under no_grad; "
        "records log_prob = action_logp, value = value",
        "  returns and GAE advantages: gamma 0.98, lambda 0.8",
    ],
    "dqn_cartpole": [
        "gym.replay CartPole-v1: observations (4,) -> s, 2 actions",
        "  replay buffer of 100,000 transitions; 1,000 random ones first; each iteration 256 step(s) acting "
        "with greedy under no_grad, epsilon-greedy (1 -> 0.04 over 8,000 environment steps)",
    ],
}

# wgan_gp_grid.yaml runs the ring's loop on the 5x5 grid: the same graph, modules and phases.
for _table in (SHAPES, MODULES, PHASES):
    _table["wgan_gp_grid"] = _table["wgan_gp"]  # type: ignore[index]
OPTIMIZERS["wgan_gp_grid"] = OPTIMIZERS["wgan_gp"]

SPEC_NAMES = {
    "xor": "xor",
    "digits": "digits",
    "gan_ring": "gan-ring",
    "wgan_gp": "wgan-gp-ring",
    "wgan_gp_grid": "wgan-gp-grid",
    "multitask": "multitask-moons",
    "tbptt_sine": "tbptt-sine",
    "a2c_cartpole": "a2c-cartpole",
    "ppo_cartpole": "ppo-cartpole",
    "dqn_cartpole": "dqn-cartpole",
}


# ------------------------------------------------------------------ helpers


def needs(stem: str) -> None:
    if "digits" in stem:
        pytest.importorskip("sklearn", reason=f"specs/{stem}.yaml reads scikit-learn's bundled digits")
    if stem.endswith("_cartpole"):
        pytest.importorskip("gymnasium", reason=f"specs/{stem}.yaml runs a gymnasium environment")


def compile_example(stem: str) -> Compiled:
    needs(stem)
    compiled, report = compile_file(SPECS / f"{stem}.yaml")
    assert not report.items, report.render()
    assert compiled is not None
    return compiled


def names(params) -> set[str]:  # type: ignore[no-untyped-def]
    return {p.name for p in params}


def module_params(compiled: Compiled, *modules: str) -> set[str]:
    return {p.name for m in modules for p in compiled.modules[m].params}


def tensors(k: int) -> str:
    return f"{k} tensor{'s' if k != 1 else ''}"


def group(compiled: Compiled, modules: list[str]) -> str:
    """'D (6 tensors)' / 'backbone (4 tensors), cls_head (2 tensors)', as the report writes it."""
    return ", ".join(f"{m} ({tensors(len(compiled.modules[m].params))})" for m in modules)


def header_comment(text: str) -> str:
    """The comment block a spec starts with (its '#' lines, without the '#'), or '' if none."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines).strip()


def report_lines(compiled: Compiled) -> list[str]:
    return [line.rstrip() for line in summarize(compiled).splitlines()]


# ------------------------------------------------------------------ every spec in specs/


def test_the_known_examples_are_there() -> None:
    stems = {p.stem for p in ALL_SPECS}
    assert set(KNOWN) <= stems, f"missing example specs: {set(KNOWN) - stems}"


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.name)
def test_every_example_starts_with_a_comment_saying_what_it_demonstrates(path: pathlib.Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# "), f"{path.name} must start with a '# ...' comment saying what it demonstrates"
    words = header_comment(text).split()
    assert len(words) >= 8, f"{path.name}: the header comment is too short to say what the example demonstrates"


def test_the_header_check_rejects_a_spec_without_a_header(tmp_path: pathlib.Path) -> None:
    """A new spec dropped into specs/ without a header comment fails the test above."""
    body = (SPECS / "xor.yaml").read_text(encoding="utf-8")
    headless = "\n".join(line for line in body.splitlines() if not line.startswith("#")) + "\n"
    new = tmp_path / "new_example.yaml"
    new.write_text(headless, encoding="utf-8")
    with pytest.raises(AssertionError, match="must start with a"):
        test_every_example_starts_with_a_comment_saying_what_it_demonstrates(new)
    # A blank line or a YAML document marker before the comment does not count either.
    assert header_comment("\n# late comment\nversion: 1\n") == ""
    assert header_comment("---\n# late comment\n") == ""
    # ... and a bare '#' is not a description.
    short = tmp_path / "short.yaml"
    short.write_text("# xor\n" + headless, encoding="utf-8")
    with pytest.raises(AssertionError, match="too short"):
        test_every_example_starts_with_a_comment_saying_what_it_demonstrates(short)


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.name)
def test_every_example_compiles_without_errors_or_warnings(path: pathlib.Path) -> None:
    needs(path.stem)
    compiled, report = compile_file(path, example_overrides(path))  # a teacher for distill_digits
    assert report.errors == [], report.render()
    assert report.warnings == [], report.render()
    assert compiled is not None
    lines = report_lines(compiled)
    # The report has a row per named node with its compiled static shape ...
    for section, kind in (("inputs", "input"), ("nodes", "node"), ("losses", "loss"), ("metrics", "metric")):
        for name in getattr(compiled.spec, section):
            for label, node in (
                [(f'{name}["{k}"]', v) for k, v in compiled.records[name].items()]  # a row per output
                if name in compiled.records
                else [(name, compiled.names[name])]
            ):
                row = f"{label:<16} {kind:<8} {shape_text(node.shape)}"
                assert row in lines, f"no row {row!r} in the report of {path.name}"
    # ... and a row per module whose weight count is the sum of its parameters' sizes.
    for name, m in compiled.modules.items():
        weights = sum(int(np.prod(p.shape)) for p in m.params)
        assert any(re.match(rf"^{re.escape(name)}\s+{m.kind}\s+{weights:,}(\s|$)", line) for line in lines), name
    # Every phase is reported, and every loss is a scalar.
    for ph in compiled.phases:
        assert any(line.startswith(f"phase {ph.name}") for line in lines)
    for name, node in compiled.losses.items():
        assert all(d == 1 for d in node.shape), name


# ------------------------------------------------------------------ the report, spec by spec


@pytest.mark.parametrize("stem", KNOWN)
def test_report_header_counts_every_parameter(stem: str) -> None:
    compiled = compile_example(stem)
    expected_tensors = sum(t for _, _, t, _ in MODULES[stem].values())
    expected_weights = sum(w for _, w, _, _ in MODULES[stem].values())
    first = report_lines(compiled)[0]
    assert first == f"spec {SPEC_NAMES[stem]!r}: {expected_tensors} parameter tensors, {expected_weights:,} weights"


@pytest.mark.parametrize("stem", KNOWN)
def test_report_module_rows(stem: str) -> None:
    compiled = compile_example(stem)
    lines = report_lines(compiled)
    rows = [line for line in lines if line and line.split()[0] in MODULES[stem]]
    assert len(rows) == len(MODULES[stem]), rows
    assert list(compiled.modules) == list(MODULES[stem])
    for name, (kind, weights, n_tensors, notes) in MODULES[stem].items():
        row = f"{name:<16} {kind:<8} {weights:>9,}  {notes}".rstrip()
        assert row in lines, f"expected {row!r} in:\n" + "\n".join(lines)
        assert len(compiled.modules[name].params) == n_tensors
        assert sum(int(np.prod(p.shape)) for p in compiled.modules[name].params) == weights


@pytest.mark.parametrize("stem", KNOWN)
def test_report_node_shapes(stem: str) -> None:
    compiled = compile_example(stem)
    lines = report_lines(compiled)
    start = lines.index(f"{'node':<16} {'kind':<8} shape")
    rows = []
    for line in lines[start + 1 :]:
        if not line:
            break
        rows.append(line)
    expected = [f"{name:<16} {kind:<8} {shape_text(shape)}" for name, (kind, shape) in SHAPES[stem].items()]
    assert rows == expected
    # The graph's static shapes agree (None is the batch dimension).
    for name, (_, shape) in SHAPES[stem].items():
        assert tuple(compiled.names[name].shape) == shape, name


@pytest.mark.parametrize("stem", KNOWN)
def test_report_optimizers(stem: str) -> None:
    compiled = compile_example(stem)
    lines = report_lines(compiled)
    for opt, (kind, lr, schedule, modules) in OPTIMIZERS[stem].items():
        with_schedule = f" with {schedule}" if schedule else ""
        assert f"optimizer {opt} ({kind}, lr {lr:g}{with_schedule}) updates {group(compiled, modules)}" in lines
        # The optimizer object holds exactly its modules' parameters, no more, no less.
        want = module_params(compiled, *modules)
        assert names(compiled.optimizer_params[opt]) == want
        assert names(compiled.optimizers[opt].params) == want
        assert len(compiled.optimizers[opt].params) == len(want)
        if schedule is None:
            assert compiled.optimizers[opt].lr == pytest.approx(lr)
        else:
            assert type(compiled.schedules[opt]).__name__.lower() == schedule.replace("_", "")
            assert compiled.schedules[opt].base_lr == pytest.approx(lr)


@pytest.mark.parametrize("stem", KNOWN)
def test_report_phases(stem: str) -> None:
    compiled = compile_example(stem)
    text = "\n".join(report_lines(compiled))
    assert [ph.name for ph in compiled.phases] == list(PHASES[stem])
    for ph in compiled.phases:
        repeat, detach, steps, backwards, cuts = PHASES[stem][ph.name]
        extra = []
        if repeat > 1:
            extra.append(f"repeat {repeat}")
        epochs = EPOCHS.get(stem, {}).get(ph.name)
        if epochs is not None:
            extra.append(f"{epochs} epochs of minibatches")
        if detach:
            extra.append("detach " + ", ".join(detach))
        extra.append("steps " + ", ".join(steps))
        block = [f"phase {ph.name} ({'; '.join(extra)})"]
        for i, (loss, retain, reached) in enumerate(backwards, 1):
            flag = " [retain_graph]" if retain else ""
            weight = WEIGHTS.get(stem, {}).get(loss)
            scaled = f" x {weight:g}" if weight is not None else ""
            block.append(f"  backward {i}: {loss}{scaled}{flag} reaches {group(compiled, reached)}")
        for d, cut in cuts.items():
            block.append(f"  detach {d} cuts off {group(compiled, cut)}")
        assert "\n".join(block) in text, "expected the block\n" + "\n".join(block) + "\nin\n" + text
        # The same facts on the Compiled object.
        assert ph.spec.repeat == repeat and ph.spec.epochs == epochs
        assert [d.name for d in ph.detach] == detach
        assert ph.step == steps
        assert [(b.loss, b.retain_graph) for b in ph.backward] == [(b[0], b[1]) for b in backwards]
        for b, (_, _, reached) in zip(ph.backward, backwards):
            assert names(b.reached) == module_params(compiled, *reached)
        assert {d: set(cut) for d, cut in ph.cut.items()} == {d: module_params(compiled, *ms) for d, ms in cuts.items()}


# ------------------------------------------------------------------ the Compiled object


def test_gan_ring_discriminator_and_generator() -> None:
    c = compile_example("gan_ring")
    d_params = module_params(c, "D")
    g_params = module_params(c, "G")
    assert d_params == {f"D.{i}.{w}" for i in (0, 2, 4) for w in ("weight", "bias")}
    assert g_params == {f"G.{i}.{w}" for i in (0, 2, 4) for w in ("weight", "bias")}
    assert c.modules["D"].calls == 2 and c.modules["G"].calls == 1
    opt = c.optimizers["d_opt"]
    assert names(opt.params) == d_params
    assert opt.hyper["betas"] == (0.5, 0.999) and opt.lr == pytest.approx(1e-3)
    disc, gen = c.phases
    # The discriminator's backward reaches D only: fake is detached, which cuts G off.
    assert names(disc.backward[0].reached) == d_params
    assert set(disc.cut["fake"]) == g_params
    # The generator's backward runs through D (whose weights it does not step) into G.
    assert names(gen.backward[0].targets) == g_params
    assert names(gen.backward[0].reached) == g_params
    assert gen.detach == [] and gen.cut == {}
    # Parameter shapes follow the layer sizes, (in, out) per linear layer.
    shapes = {p.name: tuple(p.shape) for p in c.graph.parameters()}
    assert shapes["G.0.weight"] == (16, 128) and shapes["G.4.weight"] == (128, 2) and shapes["G.4.bias"] == (2,)
    assert shapes["D.0.weight"] == (2, 128) and shapes["D.4.weight"] == (128, 1)


def test_tbptt_carries_h_last_into_h0() -> None:
    c = compile_example("tbptt_sine")
    assert set(c.carries) == {"h0"}
    assert c.carries["h0"] == c.names["h_last"]
    assert c.carries["h0"].name == "h_last"
    assert tuple(c.carries["h0"].shape) == tuple(c.inputs["h0"].shape) == (None, 32)
    assert c.inputs["x"].shape == (None, 20, 1)
    assert c.names["hs"].shape == (None, 20, 32)
    assert c.modules["cell"].kind == "cell" and c.modules["cell"].calls == 20
    assert sorted(tuple(p.shape) for p in c.modules["cell"].params) == sorted([(1, 96), (32, 96), (96,), (96,)])


def test_multitask_backbone_gets_both_losses() -> None:
    c = compile_example("multitask")
    (joint,) = c.phases
    first, second = joint.backward
    assert first.retain_graph and not second.retain_graph
    backbone = module_params(c, "backbone")
    assert backbone <= names(first.reached) and backbone <= names(second.reached)
    assert not module_params(c, "reg_head") & names(first.reached)
    assert not module_params(c, "cls_head") & names(second.reached)


def _ancestors(node):  # type: ignore[no-untyped-def]
    seen, stack = {}, [node]
    while stack:
        n = stack.pop()
        if n.index not in seen:
            seen[n.index] = n
            stack.extend(n.inputs)
    return list(seen.values())


def test_wgan_gp_penalty_is_built_from_a_gradient() -> None:
    c = compile_example("wgan_gp")
    g = c.graph
    gp = g._node(c.losses["gp"])
    anc = _ancestors(gp)
    grad_nodes = [n for n in anc if n.grad_of is not None]
    assert grad_nodes, "gp should contain the gradient nodes that grad(...) builds"
    # Those gradient nodes differentiate C's forward on x_hat: they read C's weights directly.
    params_read = {p.name for n in grad_nodes for p in n.inputs if p.kind == "parameter"}
    assert {"C.2.weight", "C.4.weight"} <= params_read
    # The critic's backward of c_loss (which holds 10 * gp) reaches C; with only gp it still
    # reaches C's weights: a gradient of a gradient.
    critic = c.phases[0]
    assert names(critic.backward[0].reached) == module_params(c, "C")
    for d in critic.detach:
        g.detach_node(d)
    try:
        weights = [p for p in c.modules["C"].params if p.name.endswith("weight")]
        plan = g._backward_plan(gp, [g._node(p) for p in weights])
        assert all(gn is not None for gn in plan.grads)
    finally:
        for d in critic.detach:
            g.attach_node(d)


def test_wgan_gp_gradient_of_gradient_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    text = (SPECS / "wgan_gp.yaml").read_text(encoding="utf-8").replace("seed: 0\n", "seed: 0\ndtype: float64\n", 1)
    c, report = compile_text(text, "wgan_gp.yaml", SPECS)
    assert c is not None, report.render()
    g = c.graph
    rng = np.random.default_rng(0)
    n = 12
    feed = {"real": rng.normal(size=(n, 2)), "z": rng.normal(size=(n, 4)), "eps": rng.uniform(-1, 1, size=(n, 1))}
    for k, v in feed.items():
        g.set_value(c.inputs[k], v)
    c_params = c.modules["C"].params
    g_params = c.modules["G"].params
    # The critic phase: fake detached, backward of c_loss into C (and G, which it must not reach).
    critic = c.phases[0]
    g.clear_jacobi()
    g.forward_node(c.losses["c_loss"])
    for d in critic.detach:
        g.detach_node(d)
    try:
        g.backward_nodes_ex([*c_params, *g_params], c.losses["c_loss"], retain_graph=True)
    finally:
        for d in critic.detach:
            g.attach_node(d)
    ours_c = {p.name: g.get_node_grad(p) for p in c_params}
    assert all(g.get_node_grad(p) is None for p in g_params)
    g.forward_node(c.losses["gp"])
    ours_gp = g.get_node_value(c.losses["gp"])

    t = {
        p.name: torch.tensor(g.get_node_value(p), requires_grad=p.name.startswith("C.")) for p in [*c_params, *g_params]
    }

    def mlp3(prefix: str, x):  # type: ignore[no-untyped-def]
        h = torch.relu(x @ t[f"{prefix}.0.weight"] + t[f"{prefix}.0.bias"])
        h = torch.relu(h @ t[f"{prefix}.2.weight"] + t[f"{prefix}.2.bias"])
        return h @ t[f"{prefix}.4.weight"] + t[f"{prefix}.4.bias"]

    real, z, eps = (torch.tensor(feed[k]) for k in ("real", "z", "eps"))
    fake = mlp3("G", z).detach()
    x_hat = (eps.abs() * real + (1 - eps.abs()) * fake).requires_grad_(True)
    (dx,) = torch.autograd.grad(mlp3("C", x_hat).sum(), x_hat, create_graph=True)
    gp = ((dx.norm(dim=1) - 1) ** 2).mean()
    c_loss = mlp3("C", fake).mean() - mlp3("C", real).mean() + 10 * gp
    wanted = torch.autograd.grad(c_loss, [t[p.name] for p in c_params], allow_unused=True, retain_graph=True)
    np.testing.assert_allclose(np.asarray(ours_gp).reshape(()), gp.item(), rtol=1e-10)
    for p, w in zip(c_params, wanted):
        want = np.zeros(tuple(p.shape)) if w is None else w.numpy()
        got = ours_c[p.name]
        assert got is not None, p.name
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10, err_msg=p.name)
    # The penalty's own gradient with respect to C's last weight is not zero: the second-order
    # path through grad(...) really is differentiated.
    (w4,) = torch.autograd.grad(gp, [t["C.4.weight"]])
    assert float(w4.abs().max()) > 1e-6


# ------------------------------------------------------------------ variants of the examples


def _variant(stem: str, old: str, new: str):  # type: ignore[no-untyped-def]
    text = (SPECS / f"{stem}.yaml").read_text(encoding="utf-8")
    assert old in text
    return compile_text(text.replace(old, new, 1), f"{stem}.yaml", SPECS)


def _line_of(stem: str, needle: str) -> int:
    lines = (SPECS / f"{stem}.yaml").read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)


def test_multitask_without_retain_graph_is_an_error_at_the_second_backward() -> None:
    c, report = _variant("multitask", "cls_head], retain_graph: true}", "cls_head], retain_graph: false}")
    assert c is None
    (err,) = report.errors
    assert err.code == "E-RELEASED"
    assert err.line == _line_of("multitask", "{loss: reg_loss")
    assert "reg_loss" in err.message and "cls_loss" in err.message
    assert err.hint == "add retain_graph: true to backward 1"


def test_multitask_retain_graph_on_the_last_backward_is_a_warning() -> None:
    c, report = _variant("multitask", "wrt: [backbone, reg_head]}", "wrt: [backbone, reg_head], retain_graph: true}")
    assert c is not None and not report.errors
    (w,) = report.warnings
    assert w.code == "W-RETAIN" and w.line == _line_of("multitask", "{loss: reg_loss")


def test_gan_ring_detaching_fake_in_the_generator_phase_is_an_error() -> None:
    text = (SPECS / "gan_ring.yaml").read_text(encoding="utf-8")
    text = text.replace("    - name: generator\n", "    - name: generator\n      detach: [fake]\n", 1)
    c, report = compile_text(text, "gan_ring.yaml", SPECS)
    assert c is None
    (err,) = report.errors
    assert err.code == "E-PHASE"
    assert "g_opt" in err.message and "fake is detached" in err.message


def test_gan_ring_without_the_detach_still_trains_only_d_in_the_discriminator_phase() -> None:
    c, report = _variant("gan_ring", "      detach: [fake]\n", "")
    assert c is not None and not report.items, report.render()
    disc = c.phases[0]
    assert disc.cut == {}
    assert names(disc.backward[0].reached) == module_params(c, "D")
    assert "detach" not in "\n".join(line for line in report_lines(c) if line.startswith("phase discriminator"))


@pytest.mark.parametrize("stem", sorted(GYM))
def test_report_describes_the_gym_source(stem: str) -> None:
    lines = report_lines(compile_example(stem))
    start = lines.index(GYM[stem][0])
    assert lines[start : start + len(GYM[stem])] == GYM[stem]
