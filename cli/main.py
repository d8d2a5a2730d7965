"""``onlytorch``: the command-line entry point (a click group)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from . import interrupts
from .export_cmd import export_command
from .paths import CheckedPath
from .report_cmd import report_command
from .sweep_cmd import sweep_command

if TYPE_CHECKING:
    from onlytorch.app import LoadedSpec


class _Group(click.Group):
    """The command group. SIGINT and SIGTERM are handled for the whole command, from before it
    imports the engine until it exits: any of them ends it with exit code 130 and a short message
    (never click's "Aborted!" with 1, a traceback, 143 or -2). See cli/interrupts.py."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        its: interrupts.Interrupts | None = None
        # the process's own command line (the console script's cli()), not a call with arguments
        owns = not args and kwargs.get("args") is None and kwargs.get("standalone_mode", True)
        try:
            with interrupts.installed() as its:
                return super().main(*args, **kwargs)
        except SystemExit as e:
            # a signal that came while click was already ending the command still makes it 130
            code = e.code
            if its is not None and its.received and code != interrupts.EXIT_INTERRUPTED:
                code = interrupts.EXIT_INTERRUPTED
            if owns:
                interrupts.end_process(code)  # the command's own process ends here (see end_process)
            raise SystemExit(code) from None
        except KeyboardInterrupt:  # one that landed outside click's hands (installing, restoring)
            click.echo("\ninterrupted", err=True)
            if owns:
                interrupts.end_process(interrupts.EXIT_INTERRUPTED)
            raise SystemExit(interrupts.EXIT_INTERRUPTED) from None

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            raise click.exceptions.Exit(interrupts.EXIT_INTERRUPTED) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            ctx.exit(interrupts.EXIT_INTERRUPTED)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:
            # What no command turned into its own message (out of memory while compiling, a bug):
            # one line and exit 1 as a failed command, never a traceback.
            from onlytorch.errors import GraphError

            from .train_cmd import EXIT_FAILED, failure_message

            click.echo(f"error: {failure_message(e, (GraphError,))}", err=True)
            ctx.exit(EXIT_FAILED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="onlytorch", prog_name="onlytorch", message="%(prog)s %(version)s")
@click.option(
    "--import",
    "modules",
    multiple=True,
    metavar="MODULE",
    help="Import this Python module first (repeatable): your own layers, data sources and optimizers "
    "register themselves when imported. Modules are looked up from the current directory too.",
)
def cli(modules: tuple[str, ...]) -> None:
    """onlytorch: a numpy deep-learning engine built around control of gradient flow."""
    if modules:
        _import_extensions(modules)


def _import_extensions(modules: tuple[str, ...]) -> None:
    """Import the user's extension modules (``--import``); one that cannot be imported is a usage
    error naming it (exit 2), never a traceback."""
    import importlib
    import os

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the user's modules beside their specs
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # an import error, or one the module raised while registering
            raise click.UsageError(f"--import {name}: {type(e).__name__}: {e}") from None


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta[f"onlytorch.{param.name}"] = value
    return value


# A flag that several commands share; the compile step reads it from the context (see _allow_outside).
_allow_outside_option = click.option(
    "--allow-outside",
    is_flag=True,
    expose_value=False,
    callback=_remember,
    help="Let the spec read data files and init checkpoints outside its folder (see docs/inputs.md).",
)


def _allow_outside() -> bool:
    return bool(click.get_current_context().meta.get("onlytorch.allow_outside", False))


def _memory_bound(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from onlytorch.footprint import parse_size

    try:
        ctx.meta["onlytorch.max_memory"] = None if value is None else parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    return ctx.meta["onlytorch.max_memory"]


# The memory bound of validate and train; the compile step reads it from the context (see _max_memory).
_max_memory_option = click.option(
    "--max-memory",
    metavar="SIZE",
    expose_value=False,
    callback=_memory_bound,
    help="Refuse a spec whose estimated memory passes SIZE (e.g. 2GiB, 500MB; default: the machine's memory, "
    "see docs/memory.md).",
)


def _max_memory() -> int | None:
    return click.get_current_context().meta.get("onlytorch.max_memory")


def _use_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None:
        from onlytorch.threads import num_threads

        ctx.with_resource(num_threads(value))  # until the command ends (in-process callers get theirs back)
    return value


# The BLAS thread count of train and eval (onlytorch/threads.py); set for the whole command.
_threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    expose_value=False,
    callback=_use_threads,
    help="BLAS threads for every matrix product (default: one for small models, all cores for large ones; "
    "OPENBLAS_NUM_THREADS/OMP_NUM_THREADS, when set, are respected).",
)


def _init_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """train's --init, and validate's and graph's: the same checkpoints, compiled with the same
    checks (compile_file's init=), so that a spec can be checked with the ones train will load."""
    return click.option(
        "--init", "init", multiple=True, type=CheckedPath(exists=True, dir_okay=False), metavar="CKPT", help=help
    )


_AS_TRAIN = (
    "Check SPEC with this checkpoint as train --init CKPT would start from it: every module of SPEC that it "
    "holds under the same name must fit its shapes (repeatable; read from the checkpoint's header only)."
)


@cli.command("validate")
@click.argument("spec", type=CheckedPath(exists=True, dir_okay=False))
@_allow_outside_option
@_max_memory_option
@_init_option(_AS_TRAIN)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnostics as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the diagnostics, not the compile report.")
def validate_command(spec: str, init: tuple[str, ...], strict: bool, as_json: bool, quiet: bool) -> None:
    """Check SPEC and report every problem at once (exit 0 valid, 2 invalid); on success print
    the compile report: modules, shapes, and what each backward of each phase reaches."""
    from onlytorch.compile import compile_file
    from onlytorch.compiler.summary import summarize

    compiled, report = compile_file(spec, allow_outside=_allow_outside(), max_memory=_max_memory(), init=init)
    failed = bool(report.errors) or (strict and bool(report.warnings))
    if as_json:
        click.echo(report.to_json())
    else:
        if report.items:
            click.echo(report.render(), err=True)
        if compiled is not None and not failed and not quiet:
            click.echo(summarize(compiled, _max_memory()))
        n_err, n_warn = len(report.errors), len(report.warnings)
        verdict = "invalid" if failed else "valid"
        click.echo(
            f"{spec}: {verdict} ({n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)})", err=failed
        )
    sys.exit(2 if failed else 0)


def _load(spec: str, sets: tuple[str, ...], seed: int | None, init: tuple[str, ...] = ()) -> LoadedSpec:
    """The spec compiled with its --set overrides, --seed and --init checkpoints; its diagnostics
    said; exit 2 if invalid."""
    from onlytorch.app import BadOverride, InvalidSpec, load_spec

    try:
        loaded = load_spec(
            spec, seed=seed, overrides=sets, allow_outside=_allow_outside(), max_memory=_max_memory(), init=init
        )
    except BadOverride as e:
        raise click.BadParameter(str(e), param_hint="--set") from None
    except InvalidSpec as e:
        if e.report.items:
            click.echo(e.report.render(), err=True)
        n = len(e.report.errors)
        click.echo(f"{spec}: invalid ({n} error{'s' if n != 1 else ''}); see onlytorch validate {spec}", err=True)
        sys.exit(2)
    if loaded.report is not None and loaded.report.items:
        click.echo(loaded.report.render(), err=True)
    return loaded


@cli.command("train")
@click.argument("spec", type=CheckedPath(exists=True, dir_okay=False))
@_allow_outside_option
@_threads_option
@_max_memory_option
@click.option(
    "--out", "out", type=CheckedPath(file_okay=False), help="The run directory (default: runs/NAME, numbered if taken)."
)
@click.option("--seed", type=int, help="Override the spec's seed.")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a spec value, e.g. --set train.steps=100 (repeatable).",
)
@_init_option(
    "Start every module of SPEC that this checkpoint (.npz of another run) holds under the same name from "
    "its values (repeatable; a later one wins; a fresh run only, never on --resume)."
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--force", is_flag=True, help="With --resume: continue even though the spec changed.")
@click.option("--quiet", "-q", is_flag=True, help="No progress line.")
@click.option(
    "--no-tensorboard",
    "no_tensorboard",
    is_flag=True,
    help="Write no TensorBoard event files (written to RUN_DIR/tensorboard/ when tensorboardX is installed).",
)
@click.option(
    "--mlflow", "mlflow", metavar="URI", help="Log the run to MLflow at this tracking URI (the mlflow extra)."
)
@click.option(
    "--report",
    "report",
    is_flag=True,
    help="Then write the run's report into RUN_DIR/report/ (what onlytorch report RUN_DIR writes: pictures and "
    "report.html), also for an early-stopped run and for a diverged or failed run that logged rows "
    "(the plot extra; checked before training).",
)
def train_command(
    spec: str,
    out: str | None,
    seed: int | None,
    sets: tuple[str, ...],
    init: tuple[str, ...],
    resume: bool,
    force: bool,
    quiet: bool,
    no_tensorboard: bool,
    mlflow: str | None,
    report: bool = False,
) -> None:
    """Train SPEC: run its schedule, log metrics, write checkpoints, evaluate under no_grad.
    Exit 0 done, 1 failed, 2 invalid spec or usage, 3 diverged, 130 interrupted (resumable)."""
    from onlytorch_cli.train_cmd import run_training

    if report:  # refused at once, not after a long training
        from onlytorch.report import PLOT_EXTRA_HINT, PlotsUnavailable, require_matplotlib

        try:
            require_matplotlib()
        except PlotsUnavailable:
            raise click.UsageError(f"--report needs the plot extra: {PLOT_EXTRA_HINT}") from None
    loaded = _load(spec, sets, seed, init)
    sys.exit(
        run_training(
            loaded,
            out,
            resume,
            force,
            quiet,
            tensorboard=False if no_tensorboard else None,
            mlflow=mlflow,
            report=report,
        )
    )


@cli.command("eval")
@click.argument("spec", type=CheckedPath(exists=True, dir_okay=False))
@_allow_outside_option
@_threads_option
@click.option(
    "--checkpoint",
    "checkpoint",
    required=True,
    type=CheckedPath(exists=True, dir_okay=False),
    help="A checkpoint (.npz) of a run of SPEC.",
)
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test"]),
    help="The split to evaluate (default: the spec's eval split).",
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a spec value (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option(
    "--episodes",
    type=click.IntRange(min=1),
    help="RL specs (a gym training source): episodes to run (default: the spec's eval.episodes, else 20).",
)
@click.option(
    "--policy",
    type=click.Choice(["greedy", "sampled"]),
    help="RL specs: act with the most likely action (greedy) or draw it as in training (default: the spec's).",
)
def eval_command(
    spec: str,
    checkpoint: str,
    split: str | None,
    sets: tuple[str, ...],
    as_json: bool,
    episodes: int | None,
    policy: str | None,
) -> None:
    """Evaluate a checkpoint of SPEC under no_grad (eval mode: dropout off, batch-norm running
    statistics) and print its metrics. For an RL spec, run whole episodes with its policy and
    print the mean and std of their returns."""
    from onlytorch_cli.train_cmd import run_eval

    sys.exit(run_eval(_load(spec, sets, None), checkpoint, split, as_json, episodes, policy))


@cli.command("graph")
@click.argument("spec", type=CheckedPath(exists=True, dir_okay=False))
@_allow_outside_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
    help="Mermaid (renders on GitHub) or Graphviz DOT.",
)
@click.option(
    "--output",
    "-o",
    type=CheckedPath(dir_okay=False, writable=True),
    help="Write to this file instead of standard output.",
)
@_init_option(_AS_TRAIN)
def graph_command(spec: str, fmt: str, output: str | None, init: tuple[str, ...]) -> None:
    """Draw SPEC's graph: modules as clusters with their parameters, losses, stop_gradient edges,
    and the nodes each phase detaches."""
    from onlytorch.compile import compile_file
    from onlytorch.compiler import drawing

    compiled, report = compile_file(spec, allow_outside=_allow_outside(), init=init)
    if compiled is None:
        click.echo(report.render(), err=True)
        click.echo(f"{spec}: invalid; fix it before drawing (onlytorch validate {spec})", err=True)
        sys.exit(2)
    text = drawing.mermaid(compiled) if fmt == "mermaid" else drawing.dot(compiled)
    if output:
        try:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as e:
            raise click.ClickException(f"cannot write {output}: {e}") from None
    else:
        click.echo(text, nl=False)


cli.add_command(report_command)
cli.add_command(sweep_command)
cli.add_command(export_command)


@cli.command("schema")
@click.option("--sweep", "sweep", is_flag=True, help="the schema of sweep files (onlytorch sweep) instead of specs")
def schema_command(sweep: bool) -> None:
    """Print the JSON Schema of the spec language (for editors' YAML support), or of sweep files."""
    if sweep:
        from onlytorch.sweep.schema import json_schema as sweep_schema

        click.echo(json.dumps(sweep_schema(), indent=2))
        return
    from onlytorch.spec.schema import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


def _onnx_line(op: Any) -> str:
    """Whether an op exports to ONNX (its ``onnx=`` mapping; a composite exports as its parts)."""
    from onlytorch.export.builder import describe

    label = describe(op.onnx)
    if label is not None:
        return label
    return "as the ops it is made of" if op.build is not None else "no mapping"


@cli.command("ops")
@click.argument("name", required=False)
def ops_command(name: str | None) -> None:
    """List the ops of the registry (the Graph methods and spec functions, with their aliases) and
    the spec language's own functions (grad, scan, param), or show one in full."""
    from onlytorch.ops.registry import public_ops
    from onlytorch.spec.expr import SPECIAL_FUNCTIONS

    table = public_ops()
    if name is None:
        for line in ops_listing():
            click.echo(line)
        return
    if name in SPECIAL_FUNCTIONS:
        signature, _, meaning = SPECIAL_FUNCTIONS[name].partition(": ")
        click.echo(signature)
        click.echo("a function of spec expressions (the compiler lowers it; not a Graph method)")
        click.echo("")
        click.echo(meaning)
        return
    if name not in table:
        from onlytorch.suggest import did_you_mean_suffix

        known = [*table, *SPECIAL_FUNCTIONS]
        raise click.UsageError(f"no op named {name!r}{did_you_mean_suffix(name, known)}")
    op = table[name]
    click.echo(f"{op.name}({op.signature()})")
    if name != op.name:
        click.echo(f"{name} is an alias of {op.name}")
    if op.aliases:
        click.echo(f"aliases: {', '.join(op.aliases)}")
    click.echo("derivative: " + ("yes" if op.vjp_rule or op.build else "none (no gradient flows through it)"))
    click.echo("ONNX: " + _onnx_line(op))
    click.echo("")
    click.echo(op.doc)


# Marks an op of the listing that does not export to ONNX (`onlytorch ops NAME` says how the others do).
NO_ONNX = "  [no ONNX]"


def ops_listing() -> list[str]:
    """The lines of `onlytorch ops`: every public op by name with its one-sentence summary, each
    alias (in name order, pointing to its op: `clamp  -> clip`), then the spec language's own
    functions with the first sentence of their meaning."""
    from onlytorch.ops.registry import first_sentence, public_ops
    from onlytorch.spec.expr import SPECIAL_FUNCTIONS

    table = public_ops()
    width = max(len(k) for k in [*table, *SPECIAL_FUNCTIONS])
    lines = ["Ops (Graph methods and spec functions; `onlytorch ops NAME` shows one in full):"]
    for key in sorted(table):
        op = table[key]
        if key != op.name:
            lines.append(f"{key:<{width}}  -> {op.name}")
            continue
        mark = "" if op.onnx is not None or op.build is not None else NO_ONNX
        lines.append(f"{key:<{width}}  {op.short()}{mark}")
    lines += ["", "Functions of spec expressions (the compiler lowers them; not Graph methods):"]
    for key, text in SPECIAL_FUNCTIONS.items():
        lines.append(f"{key:<{width}}  {first_sentence(text.partition(': ')[2])}")
    return lines
