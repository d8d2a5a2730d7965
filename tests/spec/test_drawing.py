"""``onlytorch graph``: the drawing of a spec (Mermaid and Graphviz DOT) shows modules as clusters
with their parameters, shared modules with several inputs, detached nodes with their phase,
losses styled, stop_gradient edges dashed and target copies linked to their source by sync."""

from __future__ import annotations

import pathlib
import re
import subprocess

import pytest
from click.testing import CliRunner, Result
from example_init import example_in_place, example_overrides
from graphviz_dot import dot_program
from onlytorch_cli.main import cli

from onlytorch.compile import compile_file
from onlytorch.compiler import drawing

SPECS = pathlib.Path(__file__).resolve().parents[2] / "specs"
GAN = SPECS / "gan_ring.yaml"

DQN = """\
# A DQN-like target network: Q is trained, Q_target is a copy synced every 100 steps, and the
# TD target goes through stop_gradient.
version: 1
name: dqn-like
inputs:
  s: {shape: [4], from: noise.normal}
  a: {shape: [2], from: noise.uniform}
  r: {shape: [], from: noise.normal}
  s2: {shape: [4], from: noise.normal}
modules:
  Q: [{linear: 16}, relu, {linear: 2}]
  Q_target: {copy_of: Q, sync: {every: 100}}
nodes:
  q: sum(Q(s) * a, axis=1)
  td: r + 0.99 * stop_gradient(max(Q_target(s2), axis=1))
losses:
  loss: mean((q - td) ** 2)
optimizers:
  opt: {type: adam, lr: 1.0e-3, params: [Q]}
train:
  steps: 10
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def draw(spec: pathlib.Path | str, fmt: str) -> str:
    spec, flags = example_in_place(spec)  # distill_digits: beside a teacher's run
    result = run("graph", "--format", fmt, str(spec), *flags)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result.stdout


@pytest.fixture
def dqn(tmp_path: pathlib.Path) -> pathlib.Path:
    p = tmp_path / "dqn.yaml"
    p.write_text(DQN, encoding="utf-8")
    report = run("validate", str(p))
    assert report.exit_code == 0 and report.stderr == "", report.output
    assert "target copy of Q (not trained, sync every 100 iterations)" in report.stdout
    return p


def mermaid_edges(text: str) -> list[tuple[str, str, str]]:
    """(from, arrow, to) of every Mermaid edge line."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^\s+(\w+) (-->|-\. \w+ \.->|== \w+ ==>) (\w+)$", line)
        if m:
            out.append((m[1], m[2], m[3]))
    return out


def dot_edges(text: str) -> list[tuple[str, str, str]]:
    """(from, to, attributes) of every DOT edge statement."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^\s+(\w+) -> (\w+)( \[.*\])?;$", line)
        if m:
            out.append((m[1], m[2], m[3] or ""))
    return out


def dot_balanced(text: str) -> None:
    """Braces and brackets balance outside quoted strings; quotes are paired."""
    depth = {"{": 0, "[": 0}
    closing = {"}": "{", "]": "["}
    in_str = False
    prev = ""
    for ch in text:
        if ch == '"' and prev != "\\":
            in_str = not in_str
        elif not in_str and ch in depth:
            depth[ch] += 1
        elif not in_str and ch in closing:
            depth[closing[ch]] -= 1
            assert depth[closing[ch]] >= 0, "a closing bracket without its opening one"
        prev = ch
    assert not in_str, "an unterminated string"
    assert depth == {"{": 0, "[": 0}


# ------------------------------------------------------------------ the GAN


def test_gan_mermaid() -> None:
    text = draw(GAN, "mermaid")
    assert text.startswith("flowchart LR\n")
    lines = text.splitlines()
    # Modules are clusters holding their parameter shapes.
    for module, params in {
        "G": ["0.weight (16, 128)", "0.bias (128,)", "2.weight (128, 128)", "4.weight (128, 2)", "4.bias (2,)"],
        "D": ["0.weight (2, 128)", "0.bias (128,)", "2.weight (128, 128)", "4.weight (128, 1)", "4.bias (1,)"],
    }.items():
        start = lines.index(f'  subgraph cluster_{module}["module {module}"]')
        end = lines.index("  end", start)
        body = "\n".join(lines[start:end])
        for p in params:
            assert p in body, (module, p)
    edges = mermaid_edges(text)
    # D is called on real and on fake: one cluster, two data edges in, two out (shared weights).
    assert sorted(src for src, arrow, dst in edges if dst == "m_D") == ["n_fake", "n_real"]
    assert sorted(dst for src, arrow, dst in edges if src == "m_D") == ["n_d_fake", "n_d_real"]
    assert ("n_z", "-->", "m_G") in edges and ("m_G", "-->", "n_fake") in edges
    # fake is marked as detached in the discriminator phase, and styled.
    assert '  n_fake["fake (N, 2) | detached in discriminator"]' in lines
    assert any(line.startswith("  style n_fake ") and "dasharray" in line for line in lines)
    # Losses have their own shape and style; metrics too.
    for loss in ("d_loss", "g_loss"):
        assert f'  n_{loss}[["{loss} ()"]]' in lines
        assert any(line.startswith(f"  style n_{loss} ") for line in lines)
    assert '  n_d_real_mean{{"d_real_mean ()"}}' in lines
    assert not any(line.startswith("  style n_d_real_mean") for line in lines)
    # Every edge joins declared ids.
    declared = set(re.findall(r"^\s+(\w+)[\[\(\{]", text, re.M))
    for src, _, dst in edges:
        assert src in declared and dst in declared, (src, dst)


def test_gan_dot() -> None:
    text = draw(GAN, "dot")
    assert text.startswith("digraph spec {") and text.rstrip().endswith("}")
    dot_balanced(text)
    assert "subgraph cluster_G {" in text and "subgraph cluster_D {" in text
    assert 'label="module G"' in text and 'label="module D"' in text
    assert "0.weight (16, 128)" in text and "4.weight (128, 1)" in text
    edges = dot_edges(text)
    assert sorted(src for src, dst, _ in edges if dst == "m_D") == ["n_fake", "n_real"]
    fake = next(line for line in text.splitlines() if line.strip().startswith("n_fake ["))
    assert "detached in discriminator" in fake and "style=dashed" in fake
    for loss in ("d_loss", "g_loss"):
        node = next(line for line in text.splitlines() if line.strip().startswith(f"n_{loss} ["))
        assert "shape=doubleoctagon" in node and "color=" in node
    assert not any("stop_gradient" in attrs for _, _, attrs in edges)  # the GAN detaches per phase, no stop_gradient
    declared = set(re.findall(r"^\s+(\w+) \[", text, re.M))
    for src, dst, _ in edges:
        assert src in declared and dst in declared, (src, dst)


def test_wgan_gp_draws_the_grad_edges() -> None:
    mer = mermaid_edges(draw(SPECS / "wgan_gp.yaml", "mermaid"))
    assert ("m_C", "== grad ==>", "n_gp") in mer
    assert ("n_x_hat", "== grad ==>", "m_C") in mer
    dot = dot_edges(draw(SPECS / "wgan_gp.yaml", "dot"))
    assert ("m_C", "n_gp", ' [style=bold, label="grad"]') in dot
    # C is called on real, fake and x_hat.
    assert sorted(src for src, dst, _ in dot if dst == "m_C") == ["n_fake", "n_real", "n_x_hat"]


def test_tbptt_draws_the_carry() -> None:
    assert ("n_h_last", "-. carry .->", "n_h0") in mermaid_edges(draw(SPECS / "tbptt_sine.yaml", "mermaid"))
    assert ("n_h_last", "n_h0", ' [style=dotted, label="carry"]') in dot_edges(draw(SPECS / "tbptt_sine.yaml", "dot"))


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.name)
@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_every_example_draws(path: pathlib.Path, fmt: str) -> None:
    if "digits" in path.stem:
        pytest.importorskip("sklearn")
    text = draw(path, fmt)
    compiled, _ = compile_file(path, example_overrides(path))
    assert compiled is not None
    for module in compiled.modules:
        assert f"cluster_{module}" in text
    for name in compiled.names:
        assert f"n_{name}" in text
    if fmt == "dot":
        dot_balanced(text)


# ------------------------------------------------------------------ target network and stop_gradient


def test_dqn_mermaid(dqn: pathlib.Path) -> None:
    text = draw(dqn, "mermaid")
    edges = mermaid_edges(text)
    assert ("m_Q", "-. sync .->", "m_Q_target") in edges
    assert ("m_Q_target", "-. stop_gradient .->", "n_td") in edges
    assert ("n_s2", "-. stop_gradient .->", "m_Q_target") in edges
    assert ("n_s", "-->", "m_Q") in edges and ("m_Q", "-->", "n_q") in edges
    assert 'subgraph cluster_Q_target["module Q_target"]' in text
    assert "0.weight (4, 16)" in text


def test_dqn_dot(dqn: pathlib.Path) -> None:
    text = draw(dqn, "dot")
    dot_balanced(text)
    edges = dot_edges(text)
    assert ("m_Q", "m_Q_target", ' [style=dotted, label="sync"]') in edges
    stop = [(s, d) for s, d, attrs in edges if "style=dashed" in attrs and 'label="stop_gradient"' in attrs]
    assert ("m_Q_target", "n_td") in stop
    assert all("stop_gradient" not in attrs for s, d, attrs in edges if d == "m_Q")  # Q's own path is plain


def test_names_outside_a_module_call_feed_the_node_not_the_module(dqn: pathlib.Path) -> None:
    edges = dot_edges(draw(dqn, "dot"))
    into_q = {s for s, d, _ in edges if d == "m_Q"}
    into_target = {s for s, d, _ in edges if d == "m_Q_target" and s != "m_Q"}
    assert into_q == {"n_s"}
    assert into_target == {"n_s2"}
    assert any(s == "n_a" and d == "n_q" for s, d, _ in edges)
    assert any(s == "n_r" and d == "n_td" for s, d, _ in edges)


def test_module_ids_do_not_collide(tmp_path: pathlib.Path) -> None:
    spec = tmp_path / "collide.yaml"
    spec.write_text(
        "# two modules whose drawing ids could collide\nversion: 1\nname: collide\n"
        "inputs:\n  x: {shape: [2], from: noise.normal}\n"
        "modules:\n  Q: [{linear: 3}]\n  Q_params: [{linear: 1}]\n"
        "losses:\n  loss: mean(Q_params(Q(x)))\n"
        "optimizers:\n  opt: {type: sgd, lr: 0.1, params: [Q, Q_params]}\n"
        "train:\n  steps: 1\n  schedule:\n    - name: fit\n      backward: [{loss: loss}]\n      step: [opt]\n",
        encoding="utf-8",
    )
    text = draw(spec, "dot")
    ids = [i for i in re.findall(r"^\s+(\w+) \[", text, re.M) if i != "node"]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


# ------------------------------------------------------------------ files and errors


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_output_file(tmp_path: pathlib.Path, fmt: str) -> None:
    out = tmp_path / f"gan.{'mmd' if fmt == 'mermaid' else 'dot'}"
    result = run("graph", "--format", fmt, "-o", str(out), str(GAN))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert out.read_text(encoding="utf-8") == draw(GAN, fmt)
    long = tmp_path / "long.txt"
    assert run("graph", "--format", fmt, "--output", str(long), str(GAN)).exit_code == 0
    assert long.read_text(encoding="utf-8") == out.read_text(encoding="utf-8")


def test_default_format_is_mermaid() -> None:
    assert run("graph", str(GAN)).stdout == draw(GAN, "mermaid")


def test_unknown_format_is_a_usage_error() -> None:
    result = run("graph", "--format", "svg", str(GAN))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "mermaid" in result.stderr and "dot" in result.stderr


def test_unwritable_output_is_a_short_error(tmp_path: pathlib.Path) -> None:
    result = run("graph", "-o", str(tmp_path / "no" / "such" / "dir" / "g.mmd"), str(GAN))
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "cannot write" in result.stderr


def test_invalid_spec_exits_2(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GAN.read_text(encoding="utf-8").replace("d_fake: D(fake)", "d_fake: D(fakee)"), encoding="utf-8")
    out = tmp_path / "g.mmd"
    result = run("graph", "-o", str(out), str(bad))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert re.search(r"bad\.yaml:\d+:\d+: E-NAME unknown name 'fakee'", result.stderr)
    assert "fix it before drawing" in result.stderr
    assert result.stdout == ""
    assert not out.exists()


def test_drawing_api_matches_the_command() -> None:
    compiled, _ = compile_file(GAN)
    assert compiled is not None
    assert drawing.mermaid(compiled) == draw(GAN, "mermaid")
    assert drawing.dot(compiled) == draw(GAN, "dot")


@pytest.mark.parametrize("spec", ["gan_ring", "wgan_gp", "tbptt_sine", "dqn"])
def test_graphviz_accepts_the_dot(spec: str, dqn: pathlib.Path) -> None:
    path = dqn if spec == "dqn" else SPECS / f"{spec}.yaml"
    text = draw(path, "dot")
    # Graphviz missing fails the test with how to install it (never a skip: see graphviz_dot)
    proc = subprocess.run([dot_program(), "-Tsvg"], input=text, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "<svg" in proc.stdout
