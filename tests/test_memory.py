"""What no_grad and retain_graph are for, measured with memory_stats(): a 16-layer, 512-wide tanh MLP
(float32) on a batch of 1024."""

from __future__ import annotations

import numpy as np
import pytest

import onlytorch as ot

LAYERS, WIDTH, BATCH = 16, 512, 1024
ACT = BATCH * WIDTH * 4  # bytes of one activation
MB = 1 / 2**20


class DeepMLP:
    def __init__(self) -> None:
        g = self.g = ot.Graph(seed=0)
        self.x = g.input("x", shape=(None, WIDTH))
        self.params = []
        h = self.x
        for i in range(LAYERS):
            w = g.parameter(f"w{i}", shape=(WIDTH, WIDTH), init="xavier_uniform")
            b = g.parameter(f"b{i}", shape=(WIDTH,), init="zeros")
            self.params += [w, b]
            h = g.tanh(g.linear(h, w, b, name=f"lin{i}"), name=f"h{i}")
        self.loss = g.mean(g.square(h, name="sq"), name="loss")
        self.intermediates = [f"lin{i}" for i in range(LAYERS)] + [f"h{i}" for i in range(LAYERS)] + ["sq"]
        self.param_bytes = sum(g.get_node_value(p).nbytes for p in self.params)
        g.set_value(self.x, np.random.default_rng(0).normal(size=(BATCH, WIDTH)).astype(np.float32))
        self.input_bytes = BATCH * WIDTH * 4

    def stats(self) -> dict[str, int]:
        return self.g.memory_stats()

    def describe(self, what: str, value: int) -> str:
        return (
            f"{what} = {value * MB:.1f} MiB (parameters {self.param_bytes * MB:.1f} MiB, "
            f"input {self.input_bytes * MB:.1f} MiB, one activation {ACT * MB:.1f} MiB)"
        )


@pytest.fixture(scope="module")
def mlp() -> DeepMLP:
    return DeepMLP()


def test_leaves_are_counted(mlp):
    g = mlp.g
    g.release_values()
    g.clear_jacobi()
    current = mlp.stats()["current_bytes"]
    assert abs(current - mlp.param_bytes - mlp.input_bytes) < 1024, mlp.describe("current", current)


def test_no_grad_forward_peak_is_a_few_activations(mlp):
    g = mlp.g
    g.release_values()
    g.clear_jacobi()
    g.reset_peak_memory()
    with g.no_grad():
        value = g.forward_node(mlp.loss)
    assert np.isfinite(value)
    peak = mlp.stats()["peak_bytes"] - mlp.param_bytes
    assert peak <= 4 * ACT, mlp.describe("no_grad peak above the parameters", peak)
    # Only the asked-for value stays.
    assert all(g.get_node_value(n) is None for n in mlp.intermediates)
    extra = mlp.stats()["current_bytes"] - mlp.param_bytes - mlp.input_bytes
    assert extra < 1024, mlp.describe("held after the no_grad forward", extra)


def test_training_forward_holds_every_activation_and_backward_releases_them(mlp):
    g = mlp.g
    g.release_values()
    g.clear_jacobi()
    g.reset_peak_memory()
    g.forward_node(mlp.loss)
    held = mlp.stats()["current_bytes"] - mlp.param_bytes - mlp.input_bytes
    assert held >= 2 * LAYERS * ACT, mlp.describe("held after the training forward", held)
    assert all(g.get_node_value(n) is not None for n in mlp.intermediates)

    g.backward_nodes(mlp.params, mlp.loss)
    current = mlp.stats()["current_bytes"]
    expected = 2 * mlp.param_bytes + mlp.input_bytes  # parameters, their gradients, the input (+ the loss)
    assert all(g.get_node_value(n) is None for n in mlp.intermediates)
    assert expected <= current <= expected + 4096, mlp.describe(f"held after backward (expected {expected})", current)
    assert all(g.get_node_grad(p) is not None for p in mlp.params)


def test_retain_graph_keeps_every_activation(mlp):
    g = mlp.g
    g.release_values()
    g.clear_jacobi()
    g.forward_node(mlp.loss)
    g.backward_nodes_ex(mlp.params, mlp.loss, retain_graph=True)
    current = mlp.stats()["current_bytes"]
    floor = 2 * mlp.param_bytes + mlp.input_bytes + 2 * LAYERS * ACT
    assert current >= floor, mlp.describe(f"held after a retain_graph backward (at least {floor})", current)
    assert all(g.get_node_value(n) is not None for n in mlp.intermediates)
    # The retained values serve a second backward, which then releases them.
    first = g.get_node_grad(mlp.params[0]).copy()
    g.backward_nodes(mlp.params, mlp.loss)
    np.testing.assert_allclose(g.get_node_grad(mlp.params[0]), 2 * first, rtol=1e-5)
    current = mlp.stats()["current_bytes"]
    assert current <= 2 * mlp.param_bytes + mlp.input_bytes + 4096, mlp.describe(
        "held after the final backward", current
    )
