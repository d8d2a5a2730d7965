"""``onlytorch export SPEC --checkpoint CKPT --output FILE [--node NAME ...]``: the inference graph
of a checkpoint as an ONNX model (onlytorch/export, docs/export.md). Exit 0 written; 2 an invalid
spec, an unknown node, an op without an ONNX mapping, a checkpoint that does not fit (nothing
written); 1 the file could not be written. onnx is imported only when the command runs."""

from __future__ import annotations

import sys

import click

from .paths import CheckedPath

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@click.command("export")
@click.argument("spec", type=CheckedPath(exists=True, dir_okay=False))
@click.option(
    "--checkpoint",
    required=True,
    type=CheckedPath(exists=True, dir_okay=False),
    help="A checkpoint (.npz) of a run of SPEC (last.npz, best.npz, ...).",
)
@click.option("--output", "-o", required=True, type=CheckedPath(dir_okay=False), help="The ONNX file to write.")
@click.option(
    "--node",
    "nodes",
    multiple=True,
    metavar="NAME",
    help="A node to export (repeatable): a node of the spec, a module called on nodes as in the spec "
    "(e.g. 'cls_head(h)'), or a recurrent cell module (its step). Default: the spec's main output "
    "(docs/export.md).",
)
@click.option(
    "--allow-outside",
    is_flag=True,
    help="Let the spec read data files and init checkpoints outside its folder (see docs/inputs.md).",
)
def export_command(spec: str, checkpoint: str, output: str, nodes: tuple[str, ...], allow_outside: bool) -> None:
    """Export SPEC's inference graph with CHECKPOINT's weights to an ONNX file (opset 17, IR 8,
    eval mode: dropout off, batch norm with running statistics; dynamic batch dimension)."""
    sys.exit(run_export(spec, checkpoint, output, list(nodes), allow_outside))


def run_export(spec: str, checkpoint: str, output: str, nodes: list[str], allow_outside: bool) -> int:
    from onlytorch.app import InvalidSpec, load_spec
    from onlytorch.export import ExportError, export_onnx

    try:
        loaded = load_spec(spec, allow_outside=allow_outside)
    except InvalidSpec as e:
        if e.report.items:
            click.echo(e.report.render(), err=True)
        n = len(e.report.errors)
        click.echo(f"{spec}: invalid ({n} error{'s' if n != 1 else ''}); see onlytorch validate {spec}", err=True)
        return EXIT_USAGE
    try:
        result = export_onnx(loaded, checkpoint, output, nodes or None)
    except ExportError as e:
        click.echo(f"error: {e}", err=True)
        if e.hint:
            click.echo(f"  hint: {e.hint}", err=True)
        click.echo(f"nothing written to {output}", err=True)
        return e.exit_code
    ins = ", ".join(f"{n} {_fmt(result.input_shapes[n])}" for n in result.inputs)
    outs = ", ".join(f"{n} {_fmt(result.output_shapes[n])}" for n in result.outputs)
    click.echo(f"wrote {result.path}: ONNX opset {result.opset}, IR version {result.ir_version}")
    click.echo(f"  inputs:  {ins}")
    click.echo(f"  outputs: {outs}  ({result.rule})")
    click.echo(f"  {result.onnx_nodes} ONNX nodes, {result.parameters:,} parameter values (float32)")
    return EXIT_OK


def _fmt(dims: list[int | str]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"
