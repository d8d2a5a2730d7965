"""The compiler's checks of a gym source (``GymLiveSource.check_compiled``): it runs nodes of the
graph while acting, so they must exist, have the right types and shapes, and read nothing but the
observations (and noise); and it has no fixed data set to count epochs over. They report through
the compiler's context, as its own passes do."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...ops.shapes import fmt
from ...suggest import did_you_mean
from ..sources import Source
from .policy import observation_inputs

if TYPE_CHECKING:
    from ...compiler.context import CompileContext

# The nodes a gym source's entry may name, with what each must compute.
NODES = (("action", "action"), ("log_prob", "float"), ("value", "float"))


def check_observations(source: Source, ctx: CompileContext) -> set[str]:
    """The inputs a node run while acting may read (an error when none reads the observations)."""
    obs = [n for n in observation_inputs(ctx.spec) if n in ctx.inputs]
    if not obs and not ctx.unfed:
        ctx.error(
            "E-DATA",
            f"{source.name}: no input reads the observations; declare one, e.g. "
            f"obs: {{shape: {list(ctx.data_fields['train']['obs'].shape)}, from: train.obs}}",
            ("data", "train", "source"),
        )
    return {
        *obs,
        *ctx.unfed,
        *(n for n, i in ctx.spec.inputs.items() if i.from_ and i.from_.startswith("noise.")),
    }


def check_nodes(source: Source, p: Any, ctx: CompileContext) -> None:
    """The action node and the recorded ones (log_prob, value): names of nodes, of the right dtype
    and shape, the same in eval mode (acting) as in train mode, fed by what acting feeds."""
    allowed = check_observations(source, ctx)
    for key, want in NODES:
        name = getattr(p, key, None)
        if name is None:
            continue
        where = ("data", "train", key)
        node = ctx.names.get(name)
        if node is None and ctx.several_outputs(name, where, f"data.train.{key}"):
            continue
        if node is None:
            if name in ctx.modules:
                ctx.error(
                    "E-NAME",
                    f"{source.name}: {key}: {name!r} is a module, not a node",
                    where,
                    hint=f"name a node that calls it, e.g. nodes: {{{key}_out: {name}(...)}}",
                )
            elif name not in ctx.broken:
                ctx.error(
                    "E-NAME",
                    f"{source.name}: {key}: unknown node {name!r}",
                    where,
                    hint=did_you_mean(name, ctx.known_names()),
                )
            continue
        shape = tuple(node.shape)
        dtype = ctx.g.record(node).dtype
        if want == "action":
            if dtype.kind != "i" or shape != (None,):
                ctx.error(
                    "E-TYPE",
                    f"{source.name}: action node {name} must be integer actions of shape (N,), not {dtype} {fmt(shape)}",
                    where,
                    hint="e.g. categorical_sample(logits) or argmax(q, axis=1)",
                )
        elif dtype.kind != "f":
            ctx.error("E-TYPE", f"{source.name}: {key} node {name} must be float, not {dtype}", where)
        elif shape not in ((None,), (None, 1)):
            ctx.error(
                "E-SHAPE",
                f"{source.name}: {key} node {name} must have shape (N,) or (N, 1), not {fmt(shape)}",
                where,
            )
        check_acting(source, ctx, key, name, ctx.g.forward_order([node]), allowed)


def check_acting(source: Source, ctx: CompileContext, key: str, name: str, order: list[Any], allowed: set[str]) -> None:
    """A node run while acting (under no_grad, in eval mode) must compute what training computes,
    and read only what acting feeds. ``order``: the node and its ancestors."""
    where = ("data", "train", key)
    moded = sorted({a.op.name.removesuffix("_mask") for a in order if a.op is not None and a.op.mode_dependent})
    if moded:
        ctx.error(
            "W-MODE",
            f"{source.name}: {key} node {name} goes through {', '.join(moded)}: it is computed in eval mode "
            "while acting (under no_grad) but in train mode while training, so the two differ"
            + ("; the recorded log-probabilities will not match the training ones" if key == "log_prob" else ""),
            where,
            hint="leave dropout and batch norm out of the policy and the critic",
        )
    reads = {a.name for a in order if a.kind == "input"}
    if reads - allowed:
        ctx.error(
            "E-ARG",
            f"{source.name}: {key} node {name} reads {', '.join(sorted(reads - allowed))}, which the rollout "
            "cannot feed: while acting, only the observations (inputs from train.obs) and noise have values",
            where,
        )


def check_train_epochs(source: Source, ctx: CompileContext) -> None:
    """train.epochs counts passes over a fixed data set, which a gym source does not have."""
    train = ctx.spec.train
    if train is not None and train.epochs is not None:
        ctx.error(
            "E-ARG",
            f"train.epochs counts passes over a fixed data set; with {source.name} give train.steps (iterations)",
            ("train", "epochs"),
        )
