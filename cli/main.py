"""``onlytorch``: the command-line entry point (a click group)."""

from __future__ import annotations

import click

from onlytorch import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onlytorch")
def cli() -> None:
    """onlytorch: a numpy deep-learning engine built around control of gradient flow."""


@cli.command("ops")
@click.argument("name", required=False)
def ops_command(name: str | None) -> None:
    """List the ops of the registry (the Graph methods), or show one op in full."""
    from onlytorch.ops.registry import public_ops

    table = public_ops()
    if name is not None:
        if name not in table:
            import difflib

            near = difflib.get_close_matches(name, table, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise click.UsageError(f"no op named {name!r}{hint}")
        op = table[name]
        click.echo(f"{op.name}({_signature(op)})")
        if op.aliases:
            click.echo(f"aliases: {', '.join(op.aliases)}")
        click.echo("derivative: " + ("yes" if op.vjp_rule or op.build else "none (no gradient flows through it)"))
        click.echo("")
        click.echo(op.doc)
        return
    width = max(len(k) for k in table)
    for key in sorted(table):
        op = table[key]
        if key != op.name:
            continue
        summary = op.doc.splitlines()[0] if op.doc else ""
        click.echo(f"{key:<{width}}  {summary}")


def _signature(op) -> str:  # type: ignore[no-untyped-def]
    import inspect

    parts = [("*" if op.variadic else "") + n for n in op.input_names]
    for k, v in op.attr_defaults.items():
        parts.append(k if v is inspect.Parameter.empty else f"{k}={v!r}")
    return ", ".join(parts)


