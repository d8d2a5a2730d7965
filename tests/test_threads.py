"""The BLAS thread policy (onlytorch/threads.py): decided per plan from its matrix products, the
user's explicit settings respected, and results bit for bit those of one thread."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest

import onlytorch as ot
from onlytorch import threads
from tests.cli import assert_same_state, invoke, ok, spec

# A user's environment: no thread variable set.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in threads.ENV_VARS}

# A script that runs a small and a large forward and prints the BLAS thread count after each.
SMALL_AND_LARGE = """
import numpy as np, onlytorch as ot
def model(batch, width):
    g = ot.Graph(seed=0)
    x = g.input("x", (None, width))
    y = g.sum(g.linear(x, g.parameter("w", (width, width)), g.parameter("b", (width,), init="zeros")))
    g.set_value(x, np.ones((batch, width), np.float32))
    return lambda: g.forward_node(y)
small, large = model(32, 16), model(512, 1024)
print("start", ot.get_num_threads())
for name, run in (("small", small), ("large", large), ("small", small)):
    run()
    print(name, ot.get_num_threads())
"""


def run_script(code: str, env: dict[str, str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.fixture(autouse=True)
def _policy_after():
    yield
    ot.set_num_threads(None)


def mlp(batch: int, sizes: list[int]) -> tuple[ot.Graph, ot.NodeId, list[ot.NodeId]]:
    g = ot.Graph(seed=0)
    x = g.input("x", (None, sizes[0]))
    h, params = x, []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w, bias = g.parameter(f"w{i}", (a, b)), g.parameter(f"b{i}", (b,), init="zeros")
        params += [w, bias]
        h = g.tanh(g.linear(h, w, bias))
    loss = g.mean(h * h)
    g.set_value(x, np.ones((batch, sizes[0]), np.float32))
    return g, loss, params


def plans(g: ot.Graph) -> tuple[list[bool], list[bool]]:
    return [p.big for p in g._fwd_plans.values()], [p.big for p in g._bwd_plans.values()]


def test_product_flops_counts_each_kind_of_product_with_the_batch():
    g = ot.Graph()
    x = g.input("x", (None, 3))
    w = g.parameter("w", (3, 5))
    a = g.input("a", (4, None))
    lin = g.linear(x, w, g.parameter("b", (5,)))
    mm = g.matmul(a, x)  # (4, N) @ (N, 3): the batch is the summed dimension
    nodes = [g._nodes[n.index] for n in (lin, mm)]
    assert threads.product_flops(nodes[:1], batch=7) == 2 * 7 * 3 * 5
    assert threads.product_flops(nodes[1:], batch=7) == 2 * 4 * 7 * 3
    assert threads.product_flops(nodes, batch=7) == 2 * 7 * 3 * 5
    assert threads.product_flops([g._nodes[x.index]], batch=7) == 0  # not a product


def test_small_plans_are_small_and_a_large_product_makes_its_plans_big():
    g, loss, params = mlp(64, [64, 128, 128, 10])
    g.forward_node(loss)
    g.backward_nodes(params, loss)
    assert plans(g) == ([False], [False])
    # 512 x 1024 x 1024: 1.07 GFLOP, over the threshold forward and backward
    g, loss, params = mlp(512, [1024, 1024, 10])
    g.forward_node(loss)
    g.backward_nodes(params, loss)
    assert plans(g) == ([True], [True])
    assert threads.BIG_FLOPS <= 2 * 512 * 1024 * 1024
    # the same layer on a batch of 128 (268 MFLOP) stays on one thread
    g, loss, params = mlp(128, [1024, 1024, 10])
    g.forward_node(loss)
    g.backward_nodes(params, loss)
    assert plans(g) == ([False], [False])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: the policy has nothing to choose")
def test_policy_runs_small_plans_on_one_thread_and_large_ones_on_all_cores():
    out = run_script(SMALL_AND_LARGE, CLEAN_ENV)
    start = out[1]
    assert int(start) >= 2
    assert out[2:] == ["small", "1", "large", start, "small", "1"]


def test_a_thread_variable_in_the_environment_is_never_overridden():
    out = run_script(SMALL_AND_LARGE, {**CLEAN_ENV, "OPENBLAS_NUM_THREADS": "2"})
    assert out == ["start", "2", "small", "2", "large", "2", "small", "2"]


@pytest.mark.parametrize("var", threads.ENV_VARS)
def test_each_thread_variable_turns_the_policy_off(var, monkeypatch):
    for v in threads.ENV_VARS:
        monkeypatch.delenv(v, raising=False)
    ot.set_num_threads(None)
    assert (threads.state.small, threads.user_set_env()) == (1, None)
    monkeypatch.setenv(var, "3")
    ot.set_num_threads(None)
    assert (threads.state.small, threads.state.big, threads.user_set_env()) == (0, 0, var)
    ot.set_num_threads(2)  # an explicit count still wins
    assert (threads.state.small, threads.state.big) == (2, 2)


def test_set_num_threads_forces_every_plan_and_none_returns_to_the_policy(monkeypatch):
    for var in threads.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    g, loss, params = mlp(32, [16, 16, 1])
    ot.set_num_threads(2)
    g.forward_node(loss)
    assert ot.get_num_threads() == 2 and threads.forced() == 2
    with ot.num_threads(1):
        g.forward_node(loss)
        assert ot.get_num_threads() == 1 and threads.forced() == 1
    assert threads.forced() == 2
    ot.set_num_threads(None)
    g.backward_nodes(params, loss)
    assert ot.get_num_threads() == 1 and threads.forced() is None  # the policy: a small plan


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_set_num_threads_refuses_what_is_not_a_count(bad):
    with pytest.raises(ValueError, match=r"integer >= 1 or None, got"):
        ot.set_num_threads(bad)
    assert threads.forced() is None


def test_cli_threads_option_sets_the_count_for_the_command_only(tmp_path, monkeypatch):
    seen: list[tuple[int | None, int | None]] = []
    real = threads.num_threads

    @contextlib.contextmanager
    def recording(n):
        with real(n):
            try:
                yield  # the command ends with sys.exit: its code comes in as SystemExit here
            finally:
                seen.append((n, ot.get_num_threads()))  # the count the command's last plan ran with

    monkeypatch.setattr(threads, "num_threads", recording)
    ok("train", spec("xor"), "--out", tmp_path / "run", "--threads", "2", "--set", "train.steps=3", "-q")
    ok("eval", spec("xor"), "--checkpoint", tmp_path / "run/checkpoints/last.npz", "--threads", "1")
    assert seen == [(2, 2), (1, 1)]
    assert threads.forced() is None  # given back after each command


@pytest.mark.parametrize("bad", ["0", "two"])
def test_cli_threads_option_refuses_a_bad_count(tmp_path, bad):
    result = invoke("train", spec("xor"), "--out", tmp_path / "run", "--threads", bad)
    assert result.exit_code == 2 and "--threads" in result.output
    assert not (tmp_path / "run").exists()


def test_training_with_the_policy_gives_the_bits_of_one_thread(tmp_path, monkeypatch):
    # The policy runs every plan of gan_ring on one thread (its largest product, 256x128x128, is
    # 8 MFLOP), so its checkpoint is that of --threads 1 bit for bit. On the BLAS this was built
    # with (OpenBLAS 0.3.31), two threads change the last bits of these products: threads.py.
    for var in threads.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    ot.set_num_threads(None)
    sets = ["--set", "train.steps=20", "--set", "data.train.n=512", "-q"]
    ok("train", spec("gan_ring"), "--out", tmp_path / "policy", *sets)
    assert threads.state.small == 1 and ot.get_num_threads() == 1  # the policy ran, and chose one thread
    ok("train", spec("gan_ring"), "--out", tmp_path / "one", "--threads", "1", *sets)
    assert_same_state(tmp_path / "policy/checkpoints/last.npz", tmp_path / "one/checkpoints/last.npz")


def test_help_imports_neither_threadpoolctl_nor_numpy():
    code = (
        "import sys\n"
        "from onlytorch_cli.main import cli\n"
        "for args in (['train', '--help'], ['eval', '--help']):\n"
        "    try:\n"
        "        cli(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "print(sorted(m for m in ('numpy', 'threadpoolctl', 'onlytorch.threads') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--threads" in out.stdout
    assert out.stdout.splitlines()[-1] == "[]", out.stdout


def test_the_log_line_shows_iterations_per_second(tmp_path):
    result = ok(
        "train", spec("gan_ring"), "--out", tmp_path / "run", "--set", "train.steps=6", "--set", "train.log_every=2"
    )
    lines = [line for line in result.output.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["2/6", "4/6", "6/6"]
    # from the second line on: the rate since the line before
    assert "it/s" not in lines[0]
    for line in lines[1:]:
        words = line.split()
        assert words[-1] == "it/s" and float(words[-2]) > 0, line
