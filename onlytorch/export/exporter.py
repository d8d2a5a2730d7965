"""ONNX export of a spec's inference graph: ``export_onnx(spec, checkpoint, output, nodes)``.

The spec is compiled and its checkpoint loaded as ``onlytorch eval`` does; the nodes to export
(targets.py) and everything they depend on are walked in topological order, each op through the
mapping declared beside it (``onnx=``, see builder.py), parameters and states becoming float32
initializers. The model (opset 17, IR version 8, first dimension of every input and output the
symbolic ``batch``) is checked with ``onnx.checker.check_model(full_check=True)`` and written
atomically: a failure writes nothing. onnx is imported here only, when a model is assembled.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .builder import BATCH, IR_VERSION, OPSET, Builder, MappingError, OnnxNode, apply, describe
from .targets import Plan, TargetError, choose

if TYPE_CHECKING:
    from ..app import LoadedSpec
    from ..compiler.result import Compiled
    from ..node import Node

EXIT_INVALID = 2
EXIT_FAILED = 1


class ExportError(Exception):
    """The export cannot be made: an op without an ONNX mapping (the message names the op and the
    spec node using it), an unknown --node, a checkpoint that does not fit (``exit_code`` 2); or a
    model that could not be checked or written (1). Nothing is written."""

    def __init__(self, message: str, exit_code: int = EXIT_INVALID, hint: str | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.hint = hint


@dataclass
class ExportResult:
    """A written model: its path, its inputs and outputs (ONNX names), how the nodes were chosen,
    and its size."""

    path: pathlib.Path
    inputs: list[str]
    outputs: list[str]
    rule: str
    opset: int = OPSET
    ir_version: int = IR_VERSION
    onnx_nodes: int = 0
    parameters: int = 0  # values in initializers
    input_shapes: dict[str, list[int | str]] = field(default_factory=dict)
    output_shapes: dict[str, list[int | str]] = field(default_factory=dict)


def export_onnx(
    spec: str | os.PathLike[str] | LoadedSpec | Compiled,
    checkpoint: str | os.PathLike[str] | None,
    output: str | os.PathLike[str],
    nodes: Sequence[str] | None = None,
    allow_outside: bool = False,
) -> ExportResult:
    """Export the inference graph of ``nodes`` (default: the spec's main output, see targets.py)
    with the weights of ``checkpoint`` (None: the spec's initial weights) to ``output``.
    Raises InvalidSpec for a spec that does not compile, ExportError otherwise."""
    compiled = _compiled(spec, allow_outside)
    if checkpoint is not None:
        _restore(compiled, os.fspath(checkpoint))
    try:
        plan = choose(compiled, list(nodes) if nodes else None)
    except TargetError as e:
        raise ExportError(str(e)) from None
    b, inputs, outputs = build_onnx(compiled, plan)
    model = assemble(b, inputs, outputs, compiled.spec.name)
    path = pathlib.Path(output)
    _write(model, path)
    return ExportResult(
        path=path,
        inputs=[i[0] for i in inputs],
        outputs=[o[0] for o in outputs],
        rule=plan.rule,
        onnx_nodes=len(b.nodes),
        parameters=int(sum(a.size for a in b.initializers.values())),
        input_shapes={n: _dims(s) for n, s, _ in inputs},
        output_shapes={n: _dims(s) for n, s, _ in outputs},
    )


def _compiled(spec: Any, allow_outside: bool) -> Compiled:
    from ..app import LoadedSpec, load_spec

    if isinstance(spec, (str, os.PathLike)):
        return load_spec(spec, allow_outside=allow_outside).compiled
    if isinstance(spec, LoadedSpec):
        return spec.compiled
    return spec  # type: ignore[no-any-return]


def _restore(compiled: Compiled, checkpoint: str) -> None:
    """The checkpoint's parameters and states, checked as ``onlytorch eval`` checks them (the
    trainer's restore_weights; no data is loaded: the export reads none)."""
    from .. import checkpoint as ckpt
    from ..train import Trainer

    try:
        Trainer(compiled, data={}).restore_weights(ckpt.load(checkpoint))
    except ckpt.CheckpointError as e:
        raise ExportError(str(e)) from None


ValueSpec = tuple[str, tuple, np.dtype]  # ONNX name, static shape, dtype


def build_onnx(compiled: Compiled, plan: Plan) -> tuple[Builder, list[ValueSpec], list[ValueSpec]]:
    """Walk the nodes the plan's targets need, in topological order, recording the ONNX graph;
    the graph inputs and outputs as (name, static shape, dtype)."""
    g = compiled.graph
    b = Builder(np.float32)
    spec_inputs = {v.index: k for k, v in compiled.inputs.items()}
    names = {**spec_inputs, **plan.input_names}
    order = g.forward_order([t.node for t in plan.targets])
    outputs_by_index: dict[int, list[str]] = {}
    for t in plan.targets:
        b.reserve(t.name)
        outputs_by_index.setdefault(t.node.index, []).append(t.name)
    value: dict[int, str] = {}
    inputs: list[ValueSpec] = []
    for rec in order:
        if rec.kind == "input":
            if rec.index not in names:
                raise ExportError(
                    f"the exported nodes need {rec.describe()}, which is no input of the spec",
                    hint="name nodes computed from the spec's inputs with --node",
                )
            dt = _export_dtype(rec.dtype)
            value[rec.index] = b.reserve(names[rec.index])
            b.set_info(value[rec.index], rec.shape, dt)
            inputs.append((value[rec.index], rec.shape, dt))
        elif rec.kind in ("parameter", "state"):
            arr = _leaf_value(g, rec)
            value[rec.index] = b.initializer(b.fresh(rec.name), arr.astype(_export_dtype(arr.dtype)))
        elif rec.kind == "constant":
            value[rec.index] = b.const(_leaf_value(g, rec))
            b.set_info(value[rec.index], rec.shape, _export_dtype(rec.dtype))
        else:
            value[rec.index] = _map_op(compiled, b, rec, value, order, outputs_by_index)
    outputs: list[ValueSpec] = []
    for t in plan.targets:
        rec = g.record(t.node)
        if value[rec.index] != t.name:
            b.op("Identity", value[rec.index], out=t.name)
        outputs.append((t.name, rec.shape, _export_dtype(rec.dtype)))
    return b, inputs, outputs


def _leaf_value(g: Any, rec: Node) -> np.ndarray:
    from ..node import NodeId

    return g.require_value(NodeId(g, rec.index))  # type: ignore[no-any-return]


def _map_op(
    compiled: Compiled, b: Builder, rec: Node, value: dict[int, str], order: list[Node], targets: dict[int, list[str]]
) -> str:
    op = rec.op
    assert op is not None
    outs = targets.get(rec.index)
    if op.onnx is None:
        raise ExportError(
            f"op {op.name!r} has no ONNX mapping: {where(compiled, rec, order, targets)} cannot be exported",
            hint=f"export other nodes with --node, or declare onnx= for {op.name!r} (see docs/export.md)",
        )
    g = compiled.graph
    out = outs[0] if outs else b.fresh(rec.name)
    node = OnnxNode(
        op=op.name,
        name=rec.name,
        inputs=[value[i.index] for i in rec.inputs],
        out=out,
        attrs=dict(rec.attrs),
        shape=rec.shape,
        dtype=_export_dtype(rec.dtype),
        input_shapes=[i.shape for i in rec.inputs],
        input_dtypes=[_export_dtype(i.dtype) for i in rec.inputs],
        input_values=[_leaf_value(g, i) if i.kind in ("constant", "parameter", "state") else None for i in rec.inputs],
    )
    try:
        results = apply(op.onnx, b, node)
    except MappingError as e:
        raise ExportError(
            f"op {op.name!r} cannot be exported here ({e}): {where(compiled, rec, order, targets)}"
        ) from None
    if len(results) != 1:
        raise ExportError(f"the ONNX mapping of {op.name!r} ({describe(op.onnx)}) gave {len(results)} values, not 1")
    b.set_info(results[0], rec.shape, _export_dtype(rec.dtype))
    return results[0]


def where(compiled: Compiled, rec: Node, order: list[Node], targets: dict[int, list[str]] | None = None) -> str:
    """The spec node a graph node belongs to: itself when the spec names it, else the first named
    node (or exported output) computed from it, with the module whose parameters it uses: "spec
    node 'h' (its tanh, graph node tanh_5, in module 'backbone')"."""
    spec_names = set(compiled.names)
    targets = targets or {}
    at = {k: f" at {v}" for k, v in compiled.defined_at.items()}
    if rec.user_named and rec.name in spec_names:
        return f"spec node {rec.name!r}{at.get(rec.name, '')}"
    module = _module_of(compiled, rec)
    inside = f", in module {module!r}" if module else ""
    if rec.grad_of is not None:
        inside += f", part of a derivative through {rec.grad_of.label()}"
    its = f"its {rec.op.name if rec.op is not None else rec.kind}, graph node {rec.name}{inside}"
    if rec.index in targets:
        return f"output {targets[rec.index][0]!r} (graph node {rec.name}{inside})"
    if rec.spec_node in spec_names:  # the spec node whose definition built it (Graph.building)
        return f"spec node {rec.spec_node!r} ({its}){at.get(rec.spec_node, '')}"
    downstream = {rec.index}
    for n in order:
        if n.index > rec.index and any(i.index in downstream for i in n.inputs):
            downstream.add(n.index)
            if n.user_named and n.name in spec_names:
                return f"spec node {n.name!r} ({its}){at.get(n.name, '')}"
            if n.index in targets:
                return f"output {targets[n.index][0]!r} ({its})"
    return f"node {rec.name}{inside}"


def _module_of(compiled: Compiled, rec: Node) -> str | None:
    """The module whose parameters the node (or the nodes it reads) uses, if any."""
    owner = {p.index: m for m, info in compiled.modules.items() for p in info.params}
    seen = [rec]
    for n in seen:
        if len(seen) > 64:  # far from any module: say none rather than walk the whole graph
            return None
        for i in n.inputs:
            if i.index in owner:
                return owner[i.index]
            if i.kind == "op":
                seen.append(i)
    return None


def _export_dtype(dtype: Any) -> np.dtype:
    """Floats export as float32, integers as int64, booleans stay booleans."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return np.dtype(np.float32)
    if dt.kind in "iu":
        return np.dtype(np.int64)
    return dt


def _dims(shape: tuple) -> list[int | str]:
    return [BATCH if d is None else int(d) for d in shape]


def assemble(b: Builder, inputs: list[ValueSpec], outputs: list[ValueSpec], name: str) -> Any:
    """The checked onnx ModelProto of the builder's records (imports onnx)."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ExportError(
            "ONNX export needs the onnx package: pip install 'onlytorch[onnx]'", exit_code=EXIT_INVALID
        ) from None

    def info(v: ValueSpec) -> Any:
        n, shape, dt = v
        return helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(dt), _dims(shape))

    def attr(v: Any) -> Any:
        return numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v

    nodes = [
        helper.make_node(o.op_type, o.inputs, o.outputs, name=o.name, **{k: attr(v) for k, v in o.attrs.items()})
        for o in b.nodes
    ]
    inits = [numpy_helper.from_array(a, name=n) for n, a in b.initializers.items()]
    graph = helper.make_graph(nodes, name, [info(v) for v in inputs], [info(v) for v in outputs], inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onlytorch", ir_version=IR_VERSION
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(
            f"the exported model does not pass onnx's checker (a bug in a mapping): {e}", EXIT_FAILED
        ) from None
    return model


def _write(model: Any, path: pathlib.Path) -> None:
    from ..rundir import write_atomic

    data = model.SerializeToString()
    try:
        write_atomic(path, lambda fh: fh.write(data))
    except OSError as e:
        raise ExportError(f"cannot write {path}: {e.strerror or e}", EXIT_FAILED) from None
