"""``onlytorch sweep FILE``: run a sweep or a seed study (onlytorch/sweep/runner.py) and turn how it
ended into the command's exit code: 0 when exactly the requested trials are complete or pruned,
2 for an invalid sweep file or usage (nothing written), 1 when it failed (max_failures reached,
an unusable storage), 130 when interrupted (rerunning the same command continues the study).
Nothing here imports optuna or ray until the command runs."""

from __future__ import annotations

import contextlib
import importlib.util
import pathlib
import sys
from contextlib import AbstractContextManager
from typing import Any

import click

from .paths import CheckedPath

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _needs(module: str, extra: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        click.echo(f"error: {what} needs {module}: pip install 'onlytorch[{extra}]'", err=True)
        sys.exit(EXIT_FAILED)


@click.command("sweep")
@click.argument("file", type=CheckedPath(dir_okay=False, exists=True))
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes (or Ray tasks) running trials at once.",
)
@click.option(
    "--storage",
    metavar="URL",
    help="The study's storage: an RDB URL shared by several machines (sqlite:///sweep.db, postgresql://...). Default: the journal file SWEEP_DIR/study.log.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: processes on this machine; ray: Ray tasks, one CPU each.",
)
@click.option(
    "--address", metavar="ADDR", help="The Ray cluster to join (--executor ray; default: a local Ray instance)."
)
@click.option(
    "--out", type=CheckedPath(file_okay=False), metavar="DIR", help="The sweep directory (default: sweeps/NAME)."
)
@click.option("--check", is_flag=True, help="Validate the sweep file and print the plan, without running it.")
@click.option("--quiet", is_flag=True, help="No progress lines; only the closing summary.")
@click.option(
    "--mlflow",
    "mlflow",
    metavar="URI",
    help="Log the sweep to MLflow at this tracking URI: one parent run, each trial's run (per seed) a child of it (the mlflow extra).",
)
@click.pass_context
def sweep_command(
    ctx: click.Context,
    file: str,
    workers: int,
    storage: str | None,
    executor: str,
    address: str | None,
    out: str | None,
    check: bool,
    quiet: bool,
    mlflow: str | None = None,
) -> None:
    """Run a sweep (a search over the spec's hyperparameters) or a seed study on Optuna: trials on
    local worker processes or a Ray cluster, each an ordinary run directory, the best as best.yaml
    (see docs/sweeps.md)."""
    if address is not None and executor != "ray":
        raise click.UsageError("--address names a Ray cluster: give it with --executor ray")
    _needs("optuna", "sweep", "onlytorch sweep")
    if executor == "ray":
        _needs("ray", "sweep-ray", "--executor ray")
    from onlytorch.sweep import runner as sweeping
    from onlytorch.sweep.load import load_sweep

    sweep, report = load_sweep(file)
    if sweep is None or report.warnings:  # warnings (W-SWEEP-TEST) are shown, and the sweep still runs
        click.echo(report.render(), err=True)
    if sweep is None:
        click.echo(f"{file}: invalid; fix it before running (onlytorch sweep --check {file})", err=True)
        sys.exit(EXIT_USAGE)
    if check:
        sweep_dir = pathlib.Path(out) if out else sweeping.default_dir(sweep)
        click.echo(sweeping.describe_plan(sweep, sweep_dir, storage, workers, executor))
        click.echo(f"{file}: ok")
        return
    modules = (ctx.parent.params.get("modules") if ctx.parent is not None else None) or ()
    with _mlflow_parent(mlflow, sweep, pathlib.Path(out) if out else sweeping.default_dir(sweep)):
        try:
            result = sweeping.run(
                file,
                out,
                workers=workers,
                storage=storage,
                executor=executor,
                address=address,
                quiet=quiet,
                imports=tuple(modules),
                say=_say,
            )
        except sweeping.InvalidSweep as e:  # the file changed since it was loaded above
            click.echo(e.report.render(), err=True)
            sys.exit(EXIT_USAGE)
        except sweeping.SweepError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        if quiet:
            click.echo(sweeping.summary(result, sweep), err=True)
        sys.exit(result.exit_code)  # the MLflow parent run's status follows the exit code


def _mlflow_parent(uri: str | None, sweep: Any, sweep_dir: Any) -> AbstractContextManager[Any]:
    """With --mlflow: the sweep's parent MLflow run (onlytorch/tracking/mlflow_sweep.py)."""
    if uri is None:
        return contextlib.nullcontext()
    from onlytorch.tracking.mlflow_tracker import redacted

    if importlib.util.find_spec("mlflow") is None:
        click.echo(f"error: --mlflow {redacted(uri)} needs mlflow: pip install 'onlytorch[mlflow]'", err=True)
        sys.exit(EXIT_USAGE)
    from onlytorch.tracking.mlflow_sweep import sweep_parent

    return sweep_parent(uri, sweep, sweep_dir)


def _say(text: str) -> None:
    click.echo(text, err=True)
