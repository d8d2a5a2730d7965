"""A data source is one declaration (onlytorch.data.sources.Source, or LiveSource for one the trainer
fills while it trains): sources declared here, in this file alone, are accepted by the spec
language, validated, estimated, trained on and scored like the built-in ones; and no module outside
onlytorch/data/ tells sources apart by their names."""

from __future__ import annotations

import ast
import json
import pathlib
import textwrap
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import pytest
from pydantic import Field as Param

from onlytorch import fit, footprint, monitor, report
from onlytorch.compile import Compiled, compile_text
from onlytorch.compiler.summary import summarize
from onlytorch.data import SOURCES, Field, LiveSource, LoadContext, Source, register, unregister
from onlytorch.data.sources import Params, counter_log_keys
from onlytorch.evaluation import mixture
from onlytorch.spec import schema as S
from onlytorch.train import Trainer

ROOT = pathlib.Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- a loaded source


class LineParams(Params):
    n: int = Param(64, gt=0, description="samples")
    slope: float = Param(2.0, description="y = slope * x")


def _line(p: LineParams, ctx: LoadContext) -> dict[str, np.ndarray]:
    x = np.random.default_rng(ctx.seed).uniform(-1, 1, size=(p.n, 1))
    return {"x": x, "y": p.slope * x}


def pydantic_model() -> type:
    """A plain pydantic model: it would accept unknown parameters silently."""
    import pydantic

    class Plain(pydantic.BaseModel):
        n: int = 8

    return Plain


LINE = Source(
    name="custom.line",
    params=LineParams,
    fields=lambda p: {"x": Field((1,), "float", "a point"), "y": Field((1,), "float", "slope * x")},
    load=_line,
    doc="Points on a line through the origin.",
)

LINE_SPEC = """\
version: 1
name: line
seed: 0
data:
  train: {source: custom.line, n: 48, slope: 3.0}
  batch_size: 16
inputs:
  x: {shape: [1], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  f: [{linear: 1}]
losses:
  mse: mean((f(x) - y) ** 2)
optimizers:
  opt: {type: sgd, lr: 0.3, params: [f]}
train:
  steps: 30
  schedule:
    - name: fit
      backward: [{loss: mse}]
      step: [opt]
"""


@pytest.fixture
def declared(request: pytest.FixtureRequest) -> Iterator[Source]:
    """Register the source the test is parametrised with for the test's duration."""
    source: Source = request.param
    register(source)
    try:
        yield source
    finally:
        unregister(source.name)


def compiled_or_fail(text: str) -> Compiled:
    compiled, report = compile_text(text, "custom.yaml")
    assert compiled is not None and not report.errors, report.render()
    return compiled


@pytest.mark.parametrize("declared", [LINE], indirect=True, ids=["line"])
def test_a_source_declared_in_a_test_trains_a_spec(declared: Source) -> None:
    assert "custom.line" in S.SOURCE_MODELS
    compiled = compiled_or_fail(LINE_SPEC)
    trainer = Trainer(compiled)
    np.testing.assert_allclose(trainer.data["train"]["y"], 3.0 * trainer.data["train"]["x"], rtol=1e-6)
    assert trainer.data["train"]["x"].shape == (48, 1)
    first = trainer.run_iteration()["fit/mse"]
    for _ in range(29):
        last = trainer.run_iteration()["fit/mse"]
    assert last < first / 10, (first, last)
    # the memory estimate asks the source: its n parameter counts its samples
    items = {i.what: i for i in footprint.estimate(compiled).items}
    held = items["data train (custom.line, 48 samples)"]
    assert held.nbytes == 48 * 2 * compiled.graph.dtype.itemsize and held.path == ("data", "train", "n")


@pytest.mark.parametrize("declared", [LINE], indirect=True, ids=["line"])
def test_a_declared_source_validates_its_parameters_in_the_spec(declared: Source) -> None:
    _, report = compile_text(LINE_SPEC.replace("slope: 3.0", "slop: 3.0"), "custom.yaml")
    (d,) = report.errors
    assert (d.code, d.line, d.column) == ("E-KEY", 5, 39), d
    assert d.message == "unknown key 'slop' (known here: n, slope, source)" and d.hint == "did you mean 'slope'?"


def test_unregistering_restores_the_language() -> None:
    before = json.dumps(S.Spec.model_json_schema(), sort_keys=True)
    register(LINE)
    try:
        assert json.dumps(S.Spec.model_json_schema(), sort_keys=True) != before
    finally:
        unregister(LINE.name)
    assert "custom.line" not in SOURCES and "custom.line" not in S.SOURCE_MODELS
    assert json.dumps(S.Spec.model_json_schema(), sort_keys=True) == before
    _, report = compile_text(LINE_SPEC, "custom.yaml")
    assert report.errors and any("custom.line" in d.message for d in report.errors), report.render()


# ---------------------------------------------------------------- a scored source

CENTRES = np.array([[-2.0, 0.0], [2.0, 0.0]])


class PairParams(Params):
    n: int = Param(256, gt=0, description="samples")
    std: float = Param(0.05, gt=0, description="each Gaussian's standard deviation")


def _pair(p: PairParams, ctx: LoadContext) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(ctx.seed)
    mode = rng.integers(2, size=p.n)
    return {"x": CENTRES[mode] + p.std * rng.normal(size=(p.n, 2))}


PAIR = Source(
    name="custom.pair",
    params=PairParams,
    fields=lambda p: {"x": Field((2,), "float", "a sample of the mixture")},
    load=_pair,
    doc="Two Gaussians.",
    modes=lambda p: (CENTRES, p.std),
)

PAIR_SPEC = """\
version: 1
name: pair
seed: 0
data:
  train: {source: custom.pair, n: 128}
  test: {from_split: train, fraction: 0.25}
  batch_size: 32
inputs:
  real: {shape: [2], from: train.x}
  z: {shape: [2], from: noise.normal}
modules:
  G: [{linear: 2}]
nodes:
  fake: G(z)
losses:
  moment: mean((mean(fake, axis=0) - mean(real, axis=0)) ** 2)
optimizers:
  opt: {type: sgd, lr: 0.1, params: [G]}
train:
  steps: 2
  schedule:
    - name: g
      backward: [{loss: moment}]
      step: [opt]
eval:
  samples: {node: fake, n: 64}
"""


@pytest.mark.parametrize("declared", [PAIR], indirect=True, ids=["pair"])
def test_a_scored_source_has_its_samples_scored(declared: Source) -> None:
    assert declared.scored and not LINE.scored
    compiled = compiled_or_fail(PAIR_SPEC)
    assert monitor.resolve(compiled.spec) == monitor.Monitor("modes_covered", "samples", "max")
    centres, std = mixture(compiled)
    assert centres is not None
    np.testing.assert_array_equal(centres, CENTRES)
    assert std == 0.05


# ---------------------------------------------------------------- a live source


class StreamParams(Params):
    size: int = Param(8, gt=0, description="samples drawn per iteration")
    slope: float = Param(2.0, description="y = slope * x")


class Stream:
    """Fresh samples every iteration: the trainer fills it while it trains."""

    batches_per_epoch = 1

    def __init__(self, p: Any, seed: int, dtype: Any) -> None:
        self.p, self.dtype = p, np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.drawn = 0
        self.batch: dict[str, np.ndarray] = {}

    def begin_iteration(self) -> None:
        x = self.rng.normal(size=(self.p.size, 1)).astype(self.dtype)
        self.batch = {"x": x, "y": self.p.slope * x}
        self.drawn += 1

    def next_batch(self) -> dict[str, np.ndarray]:
        return self.batch

    def stats(self) -> dict[str, float]:
        return {"drawn": float(self.drawn), "y_mean": float(np.mean(self.batch["y"])) if self.batch else 0.0}

    def episodes(self, n: int, seed: int, greedy: bool) -> dict[str, float]:
        # best after the second iteration: a mode taken from anywhere but the declaration picks another
        return {"stream_mean": -float((self.drawn - 2) ** 2), "stream_spread": float(self.drawn)}

    def state(self) -> dict[str, np.ndarray]:
        return {"drawn": np.array(self.drawn)}

    def check_state(self, state: dict[str, np.ndarray], where: str = "") -> None:
        assert set(state) == {"drawn"}, where

    def restore(self, state: dict[str, np.ndarray], where: str = "") -> None:
        self.drawn = int(state["drawn"])


class StreamSource(LiveSource):
    quantities: ClassVar[dict[str, str | None]] = {"stream_mean": "max", "stream_spread": None}
    default_monitor = "stream_mean"
    progress_stat = "y_mean"
    counter_stats = ("drawn",)

    def make_live(self, p: Any, compiled: Compiled) -> Stream:
        return Stream(p, compiled.spec.seed, compiled.graph.dtype)

    def check_compiled(self, p: Any, ctx: Any) -> None:
        if ctx.spec.data.batch_size != p.size:
            ctx.error("E-DATA", f"{self.name}: batch_size must equal size ({p.size})", ("data", "train", "size"))

    def describe(self, p: Any, compiled: Compiled) -> list[str]:
        return ["", f"{self.name}: {p.size} fresh samples each iteration"]

    def memory(self, p: Any, split: str, fields: Mapping[str, Field], itemsize: int) -> list[Any]:
        return []


def _no_data(p: Any, ctx: LoadContext) -> dict[str, np.ndarray]:
    raise AssertionError("a live source is never loaded")


STREAM = StreamSource(
    name="custom.stream",
    params=StreamParams,
    fields=lambda p: {"x": Field((1,), "float", "a point"), "y": Field((1,), "float", "slope * x")},
    load=_no_data,
    doc="Fresh points on a line every iteration.",
)

STREAM_SPEC = LINE_SPEC.replace("{source: custom.line, n: 48, slope: 3.0}", "{source: custom.stream, size: 16}")


@pytest.mark.parametrize("declared", [STREAM], indirect=True, ids=["stream"])
def test_a_live_source_declared_in_a_test_is_filled_while_training(declared: Source) -> None:
    assert declared.live
    compiled = compiled_or_fail(STREAM_SPEC)
    trainer = Trainer(compiled)
    assert isinstance(trainer.live, Stream) and "train" not in trainer.data
    losses = [trainer.run_iteration()["fit/mse"] for _ in range(30)]
    assert trainer.live.drawn == 30 and losses[-1] < losses[0] / 10
    assert trainer.state()["live/drawn"] == 30


@pytest.mark.parametrize("declared", [STREAM], indirect=True, ids=["stream"])
def test_a_live_source_checks_the_compiled_spec_and_describes_itself(declared: Source) -> None:
    _, report = compile_text(STREAM_SPEC.replace("stream, size: 16", "stream, size: 4"), "custom.yaml")
    (d,) = report.errors
    assert (d.code, d.line, d.message) == ("E-DATA", 5, "custom.stream: batch_size must equal size (4)"), d
    assert "custom.stream: 16 fresh samples each iteration" in summarize(compiled_or_fail(STREAM_SPEC))


STREAM_EVALUATED = STREAM_SPEC.replace("  steps: 30\n", "  steps: 4\n  eval_every: 1\n  log_every: 1\n")


@pytest.mark.parametrize("declared", [STREAM], indirect=True, ids=["stream"])
def test_a_live_source_declares_what_its_evaluation_reports_and_what_chooses_best(
    declared: Source, tmp_path: pathlib.Path
) -> None:
    compiled = compiled_or_fail(STREAM_EVALUATED)
    spec = compiled.spec
    assert monitor.resolve(spec) == monitor.Monitor("stream_mean", "episodes", "max")
    assert monitor.available(spec) == ["stream_mean", "stream_spread"]
    assert monitor.builtin_modes(spec) == {"stream_mean": "max"}
    assert monitor.directions(spec) == {"mse": "min", "stream_mean": "max"}
    assert monitor.BUILTIN_MODES["stream_mean"] == "max" and "stream_spread" not in monitor.BUILTIN_MODES
    assert "stream_spread" in monitor.EPISODE_QUANTITIES
    assert {"rollout/drawn", "rollout/env_steps", "rollout/buffer"} <= counter_log_keys()

    shown: list[dict[str, float]] = []
    result = fit(compiled, tmp_path / "run", on_progress=lambda step, values: shown.append(values))
    assert result.status == "completed", result.message
    # the progress line shows the statistic the source declares, under its log key
    assert [sorted(v) for v in shown] == [["fit/mse", "rollout/y_mean"]] * 4
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["monitor"] == {"metric": "stream_mean", "split": "episodes", "mode": "max"}
    assert info["best"] == {
        "checkpoint": "checkpoints/best.npz",
        "step": 2,
        "metric": "stream_mean",
        "split": "episodes",
        "mode": "max",
        "value": 0.0,
    }
    assert info["directions"] == {"mse": "min", "stream_mean": "max"}
    run = report.read_run(tmp_path / "run")
    assert [r["rollout/drawn"] for r in run.rows if "rollout/drawn" in r] == [1.0, 2.0, 3.0, 4.0]
    best = {q.name: (q.best_step, q.mode) for q in report.quantities(run)}
    assert best["eval/stream_mean"] == (2, "max") and best["eval/stream_spread"] == (None, None)

    # a declared monitor is checked against the source's declaration
    for text, message in [
        ("{metric: stream_mean, mode: min}", "train.monitor: stream_mean is declared max; mode: min would keep"),
        ("{metric: stream_spread}", "train.monitor: stream_spread has no declared direction"),
        ("{metric: return_mean}", "train.monitor: unknown metric 'return_mean' (a gym source is evaluated"),
    ]:
        with_monitor = STREAM_EVALUATED.replace("  eval_every: 1\n", f"  eval_every: 1\n  monitor: {text}\n")
        _, rep = compile_text(with_monitor, "custom.yaml")
        assert any(message in d.message for d in rep.errors), rep.render()


# ---------------------------------------------------------------- no name comparisons outside onlytorch/data


def code_strings(path: pathlib.Path) -> list[tuple[int, str]]:
    """The string constants of a module's code: docstrings aside (comments are not in the tree)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_module_outside_data_names_a_source() -> None:
    every = sorted([*(ROOT / "onlytorch").rglob("*.py"), *(ROOT / "cli").rglob("*.py")])
    outside = [p for p in every if not p.is_relative_to(ROOT / "onlytorch" / "data")]
    assert len(outside) > 40 and len(outside) < len(every)
    names = set(SOURCES)
    found = []
    for path in outside:
        for line, text in code_strings(path):
            # the gym sources' names anywhere (in a message too: it takes the name from the source),
            # any source's name as a whole string (what a comparison or a table key would hold)
            if "gym.rollout" in text or "gym.replay" in text or text in names:
                found.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
    assert not found, "source names outside onlytorch/data:\n" + "\n".join(found)


def test_no_module_outside_data_names_what_a_live_source_reports() -> None:
    """What a live source's evaluation reports (a gym source's return_mean, ...) and the keys of its
    training statistics (rollout/...) are its declaration's: the monitor, the trainer's progress
    line and log, and the report ask the source."""
    every = sorted([*(ROOT / "onlytorch").rglob("*.py"), *(ROOT / "cli").rglob("*.py")])
    outside = [p for p in every if not p.is_relative_to(ROOT / "onlytorch" / "data")]
    quantities = set(monitor.EPISODE_QUANTITIES)
    assert "return_mean" in quantities and "episode_length" in quantities
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in outside
        for line, text in code_strings(path)
        if text in quantities or text.startswith("rollout/")
    ]
    assert not found, "a live source's quantities or log keys outside onlytorch/data:\n" + "\n".join(found)


def test_the_quantity_check_sees_quantities(tmp_path: pathlib.Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        'def f(live):\n    return {"rollout/return_mean": live["return_mean"], **{f"rollout/{k}": 1 for k in live}}\n'
    )
    texts = [t for _, t in code_strings(module)]
    assert {"rollout/return_mean", "return_mean", "rollout/"} <= set(texts)


def test_the_name_check_sees_names(tmp_path: pathlib.Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        textwrap.dedent(
            '''\
            """Docstrings may name gym.rollout."""
            def f(src):
                # and comments: gym.replay
                return src.source == "gym.replay" or f"{src} (gym.rollout)" or "synthetic.ring"
            '''
        )
    )
    texts = [t for _, t in code_strings(module)]
    assert "gym.replay" in texts and " (gym.rollout)" in texts and "synthetic.ring" in texts
    assert not any("Docstrings" in t or "comments" in t for t in texts)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"params": pydantic_model()}, "params must be a subclass of onlytorch.data.Params"),
        ({"fields": {"x": Field((1,), "float", "x")}}, "fields must be a function (params) -> {name: Field}"),
        ({"load": None}, "load must be a function (params, ctx) -> {name: array}"),
        ({"name": ""}, "a data source needs a name"),
    ],
)
def test_a_declaration_that_cannot_work_is_refused_when_registered(change: dict[str, Any], message: str) -> None:
    import dataclasses

    bad = dataclasses.replace(LINE, **change)
    with pytest.raises((TypeError, ValueError)) as e:
        register(bad)
    assert message in str(e.value)
    assert bad.name not in SOURCES


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (
            {"default_monitor": "stream_spread"},
            "live source 'custom.bad': default_monitor 'stream_spread' must be one of its quantities with a "
            "direction (stream_mean), or None",
        ),
        ({"default_monitor": "return_mean"}, "default_monitor 'return_mean' must be one of its quantities"),
        ({"quantities": {"stream_mean": "higher"}}, "quantities map each name to 'max', 'min' or None"),
    ],
)
def test_a_live_declaration_that_cannot_work_is_refused_when_registered(declare: dict[str, Any], message: str) -> None:
    bad_class = type("BadStream", (StreamSource,), declare)
    bad = bad_class(name="custom.bad", params=StreamParams, fields=STREAM.fields, load=_no_data, doc="bad")
    with pytest.raises(ValueError) as e:
        register(bad)
    assert message in str(e.value)
    assert "custom.bad" not in SOURCES
