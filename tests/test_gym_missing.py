"""Without gymnasium (the ``gym`` extra), a spec with a gym source is a user's problem, not a
crash: validate reports one E-DATA at the environment id that names the extra to install, exits 2
and shows no traceback. The missing package is simulated with ``sys.modules["gymnasium"] = None``,
which makes ``import gymnasium`` raise ImportError."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from onlytorch_cli.main import cli

from onlytorch.data.gym import envs
from onlytorch.data.sources import DataError

INSTALL = "pip install 'onlytorch[gym]'"

ROLLOUT = """\
version: 1
name: t
data:
  train: {source: gym.rollout, env: CartPole-v1, envs: 2, steps: 8, action: action}
  batch_size: 16
inputs:
  obs: {shape: [4], from: train.obs}
  act: {dtype: int64, from: train.action}
  ret: {from: train.return}
modules:
  pi: [{linear: 2}]
nodes:
  logits: pi(obs)
  action: categorical_sample(logits)
losses:
  loss: -mean(categorical_log_prob(logits, act) * ret)
optimizers:
  opt: {type: adam, lr: 1.0e-3, params: [pi]}
train:
  steps: 10
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""

REPLAY = """\
version: 1
name: t
data:
  train: {source: gym.replay, env: CartPole-v1, capacity: 1000, warmup: 64, action: greedy}
  batch_size: 32
inputs:
  s: {shape: [4], from: train.obs}
  a: {dtype: int64, from: train.action}
  r: {from: train.reward}
modules:
  Q: [{linear: 2}]
nodes:
  q: Q(s)
  greedy: argmax(q, axis=1)
losses:
  td: mean((reshape(take_along(q, reshape(a, [-1, 1]), axis=1), [-1]) - r) ** 2)
optimizers:
  opt: {type: adam, lr: 1.0e-3, params: [Q]}
train:
  steps: 10
  schedule:
    - name: td
      backward: [{loss: td}]
      step: [opt]
"""


@pytest.fixture
def no_gymnasium(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # _spaces caches what it learnt from a real CartPole-v1: without clearing it, the compiler
    # would never try to import gymnasium; clearing it afterwards keeps the None out of later tests.
    envs._spaces.cache_clear()
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    yield
    envs._spaces.cache_clear()


def test_gymnasium_raises_a_data_error_naming_the_extra(no_gymnasium: None) -> None:
    with pytest.raises(DataError, match=r"gymnasium, which is not installed") as err:
        envs.gymnasium()
    assert INSTALL in str(err.value)
    with pytest.raises(DataError, match=r"not installed"):
        envs.env_spaces("CartPole-v1")


@pytest.mark.parametrize(("text", "column"), [(ROLLOUT, 37), (REPLAY, 36)], ids=["rollout", "replay"])
def test_validate_reports_the_missing_extra_once(
    no_gymnasium: None, tmp_path: pathlib.Path, text: str, column: int
) -> None:
    path = tmp_path / "gym.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    out = result.output
    assert result.exit_code == 2, out
    assert "Traceback" not in out
    # one diagnostic, at the env value: the inputs that read the source's fields stay quiet
    heads = [line for line in out.splitlines() if line.startswith(f"{path}:") and ": E-" in line]
    assert heads == [f"{path}:4:{column}: E-DATA gym sources need gymnasium, which is not installed: {INSTALL}"], out
    assert f"{path}: invalid (1 error, 0 warnings)" in out


def test_validate_json_names_the_extra(no_gymnasium: None, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gym.yaml"
    path.write_text(ROLLOUT, encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", "--json", str(path)])
    assert result.exit_code == 2, result.output
    assert '"E-DATA"' in result.output and "onlytorch[gym]" in result.output
    assert "Traceback" not in result.output


def test_the_cache_is_usable_again_afterwards() -> None:
    # runs after the tests above: the real gymnasium is back (skipped where it is not installed)
    pytest.importorskip("gymnasium")
    assert envs.env_spaces("CartPole-v1").n_actions == 2
