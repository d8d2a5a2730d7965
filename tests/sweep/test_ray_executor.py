"""The Ray executor (onlytorch/sweep/ray_executor.py): a small sweep as Ray tasks on a local Ray
instance ends exactly as the local executor's does (N complete trials, one run directory per
trial and seed, the same trials.csv); a cluster address that is malformed or that nothing listens
at is a clear error from the command (exit 2 / exit 1), not minutes of Ray retrying; a journal
storage on a cluster of several machines is refused unless the sweep directory is shared.
One Ray start for the whole module (it takes several seconds)."""

from __future__ import annotations

import os
import pathlib
import socket
import time

import pytest

pytest.importorskip("optuna")
ray = pytest.importorskip("ray")

from click.testing import CliRunner, Result  # noqa: E402
from onlytorch_cli.main import cli  # noqa: E402

from onlytorch.sweep import ray_executor as rx  # noqa: E402
from onlytorch.sweep import runner as sweeping  # noqa: E402
from onlytorch.sweep.worker import WorkerError  # noqa: E402

from .engine_helpers import info, rows, run_dirs, write_sweep  # noqa: E402

N = 4
SPACE = f"""\
trials: {N}
seeds: [0]
space:
  optimizers.opt.lr: {{loguniform: [0.001, 0.1]}}
  modules.net.0.linear: {{choice: [4, 8]}}
"""


@pytest.fixture(scope="module")
def ray_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path, sweeping.SweepResult]:
    folder = tmp_path_factory.mktemp("ray")
    file = write_sweep(folder, SPACE)
    out = folder / "sw"
    return file, out, sweeping.run(file, out, workers=2, executor="ray")


def test_the_ray_executor_completes_exactly_n_trials(ray_sweep):
    _, out, result = ray_sweep
    assert result.status == "completed" and result.exit_code == 0, result.message
    table = rows(out)
    assert [r["state"] for r in table] == ["complete"] * N
    assert sorted(int(r["number"]) for r in table) == list(range(N))
    record = info(out)
    assert record["counts"] == {"complete": N, "pruned": 0, "failed": 0, "running": 0, "waiting": 0}
    assert record["status"] == "completed" and record["best"]["number"] in range(N)
    dirs = run_dirs(out)
    assert [d.relative_to(out).as_posix() for d in dirs] == [f"trials/{n:04d}/seed-{s}" for n in range(N) for s in (0,)]
    assert all('"status": "completed"' in (d / "run.json").read_text() for d in dirs)
    assert (out / "best.yaml").is_file()
    # the trials ran in Ray's worker processes, and the local instance is gone again
    from onlytorch.sweep.study import open_study

    workers = [t.user_attrs["worker"] for t in open_study(out).trials]
    assert os.getpid() not in {w["pid"] for w in workers}
    assert {w["host"] for w in workers} == {socket.gethostname()}
    assert not ray.is_initialized()


def test_its_outputs_have_the_local_executors_form(ray_sweep, tmp_path):
    file, out, _ = ray_sweep
    local = sweeping.run(file, tmp_path / "inline", executor="inline")
    assert local.status == "completed"
    assert list(rows(out)[0]) == list(rows(tmp_path / "inline")[0])  # the same columns, in order
    ours = [d.relative_to(out) for d in run_dirs(out)]
    assert ours == [d.relative_to(tmp_path / "inline") for d in run_dirs(tmp_path / "inline")]
    assert sorted(info(out)) == sorted(info(tmp_path / "inline"))


def invoke(*args: object) -> Result:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_address_nothing_listens_at_fails_fast_with_the_fix(tmp_path):
    file = write_sweep(tmp_path, SPACE)
    address = f"127.0.0.1:{closed_port()}"
    start = time.monotonic()
    result = invoke("sweep", file, "--executor", "ray", "--address", address, "--out", tmp_path / "sw")
    assert result.exit_code == 1, result.output
    assert time.monotonic() - start < 20  # Ray's own connect would retry for minutes
    assert f"cannot reach the Ray cluster at {address}" in result.output
    assert "ray start --head" in result.output
    assert not ray.is_initialized()
    assert info(tmp_path / "sw")["counts"]["complete"] == 0  # nothing ran; rerunning with a good address continues


def test_a_malformed_address_is_a_usage_error(tmp_path):
    file = write_sweep(tmp_path, SPACE)
    result = invoke("sweep", file, "--executor", "ray", "--address", "headnode", "--out", tmp_path / "sw")
    assert result.exit_code == 2, result.output
    assert "'headnode' is not a Ray cluster address" in result.output and "HOST:PORT" in result.output


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.0.0.5:6379", ("10.0.0.5", 6379)),
        ("ray://head.example:10001", ("head.example", 10001)),
        ("[::1]:6379", ("::1", 6379)),
        ("auto", None),
    ],
)
def test_addresses_are_parsed(address, expected):
    assert rx.parse_address(address) == expected


@pytest.mark.parametrize("address", ["head", "head:", "head:port", "head:70000", "http://head/x:1", ":6379"])
def test_bad_addresses_are_refused(address):
    with pytest.raises(rx.RayUsageError, match="is not a Ray cluster address"):
        rx.parse_address(address)


def test_the_journal_is_shared_only_on_one_machine_or_a_shared_directory():
    assert rx.journal_allowed(["10.0.0.5"], "10.0.0.5", shared=False)
    assert rx.journal_allowed(["10.0.0.5", "127.0.0.1"], "10.0.0.5", shared=False)
    assert not rx.journal_allowed(["10.0.0.5", "10.0.0.6"], "10.0.0.5", shared=False)
    assert rx.journal_allowed(["10.0.0.5", "10.0.0.6"], "10.0.0.5", shared=True)
    message = str(rx.refuse_journal("10.0.0.5:6379"))
    assert "--storage postgresql://" in message and rx.SHARED_DIR_ENV in message
    assert rx.refuse_journal("x").exit_code == 2


def test_a_task_on_a_node_that_cannot_see_the_sweep_directory_says_so(tmp_path):
    with pytest.raises(WorkerError, match=f"node {socket.gethostname()} cannot see the sweep directory"):
        rx.run_task(str(tmp_path / "elsewhere"), 0, None, None)


def test_a_task_gets_the_commands_mlflow_parent_and_heartbeat_settings(tmp_path, monkeypatch):
    """A node of a cluster does not inherit the command's environment: the settings the trials
    need (the MLflow parent run, the heartbeat and grace) travel with each task."""
    wanted = {
        "ONLYTORCH_MLFLOW_TRACKING_URI": "sqlite:///x.db",
        "ONLYTORCH_MLFLOW_PARENT_RUN_ID": "abc123",
        "ONLYTORCH_SWEEP_HEARTBEAT": "2",
        "ONLYTORCH_SWEEP_GRACE": "30",
    }
    for k, v in wanted.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("UNRELATED_SETTING", "1")
    assert rx.forwarded_env() == wanted
    for k in wanted:
        monkeypatch.setenv(k, "")  # the task's node starts without them (restored after the test)
    assert rx.forwarded_env() == {}
    with pytest.raises(WorkerError):
        rx.run_task(str(tmp_path / "elsewhere"), 0, None, None, env=wanted)
    assert {k: os.environ[k] for k in wanted} == wanted


def test_ctrl_c_stops_the_tasks_and_the_ray_instance_and_leaves_a_resumable_study(tmp_path):
    """A terminal's Ctrl-C (SIGINT to the whole foreground group) while Ray tasks train: exit 130,
    every running trial failed as interrupted with its retry queued, the local Ray instance gone."""
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile

    from optuna.trial import TrialState

    from onlytorch.sweep.study import open_study

    file = write_sweep(tmp_path, "trials: 4\nspace:\n  optimizers.opt.lr: {loguniform: [0.001, 0.1]}\n", steps=100_000)
    out = tmp_path / "sw"
    temp = tempfile.mkdtemp(prefix="otrt", dir="/tmp")  # Ray's files go under it (a short path)
    env = {**os.environ, "TMPDIR": temp}
    cmd = [sys.executable, "-c", "from onlytorch_cli.main import cli; cli()", "sweep", str(file)]
    cmd += ["--executor", "ray", "--workers", "2", "--out", str(out)]
    err = open(tmp_path / "stderr", "wb")  # noqa: SIM115 (closed below; a pipe nobody reads could block)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while not all((out / "trials" / f"{n:04d}" / "seed-0" / "run.json").exists() for n in (0, 1)):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr").read_text()
            time.sleep(0.2)
        time.sleep(1.0)  # both trials in their training loops
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        err.close()
    stderr = (tmp_path / "stderr").read_text(errors="replace")
    assert code == 130 and "Traceback" not in stderr, stderr
    assert info(out)["status"] == "interrupted"
    trials = open_study(out).trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    interrupted = sorted(t.number for t in trials if t.user_attrs.get("error") == "interrupted")
    assert interrupted == [0, 1]
    assert sorted(t.user_attrs["retry_of"] for t in trials if t.state == TrialState.WAITING) == interrupted
    # the local instance was shut down: no process runs from its session, its files are removed
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert temp not in ps
    assert os.listdir(temp) == []
    shutil.rmtree(temp, ignore_errors=True)


def test_a_refused_connection_points_at_token_authentication(monkeypatch):
    monkeypatch.delenv(rx.AUTH_MODE_ENV, raising=False)
    assert "set RAY_AUTH_MODE=token" in rx._connect_fix("10.0.0.5:6379")
    monkeypatch.setenv(rx.AUTH_MODE_ENV, "token")  # already sending its token: the address or the version
    assert "ray start --head" in rx._connect_fix("10.0.0.5:6379")


def test_a_local_instance_that_will_not_start_is_a_clear_error(monkeypatch, tmp_path):
    import shutil
    import tempfile

    short = pathlib.Path(tempfile.mkdtemp(prefix="otrt", dir="/tmp"))  # Ray's files go under it (a short path)
    monkeypatch.setenv("TMPDIR", str(short))
    monkeypatch.setattr(rx.tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)

    def refuse(**kwargs):
        assert kwargs["num_cpus"] == 3 and kwargs["include_dashboard"] is False
        assert pathlib.Path(kwargs["_temp_dir"]).parent == short
        assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
        raise RuntimeError("Failed to start the GCS server\nmore details")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(rx.RayExecutorError, match="cannot start a local Ray instance: Failed to start the GCS server;"):
        rx.run_ray(str(tmp_path), 3, None, None, None)
    assert "RAY_USAGE_STATS_ENABLED" not in os.environ  # the caller's environment as it was
    assert list(short.iterdir()) == []  # its temporary directory removed
    shutil.rmtree(short)
