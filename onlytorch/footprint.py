"""The memory a spec needs, estimated from static shapes before anything big is allocated.

A training run holds, all the time: the parameters and states, the gradients of the parameters a
backward reaches, every optimizer's state buffers (Adam 2 per parameter, SGD with momentum 1, ...,
plus the flat gradient buffer of small parameters, see optim/flat.py), the loaded data splits, and
a gym source's buffer (a replay buffer of ``capacity`` transitions, a rollout of ``envs * steps``).
On top of that comes the largest of the transient peaks: a training iteration (the forward values
its phases keep for backward, the backward's working gradients; simulated phase by phase from the
compiled plans at the training batch size), an evaluation under no_grad (the widest layer at the
evaluation batch), and loading the data (generators make float64 arrays before the cast).

The compiler checks against a limit as it builds: no parameter is allocated once the parameters so
far, with their gradients and optimizer state, would pass it; no input, layer output or function
result may exceed it on its own at the batch size; no data source may hold more than it. After the
build the whole estimate is checked. Each refusal is an ``E-MEMORY`` diagnostic at the spec
position that asks for the memory. The limit is ``--max-memory``, else the machine's memory (see
``machine_memory``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .safe_files import human_size
from .spec.names import node_names

if TYPE_CHECKING:
    from .compiler.result import BackwardInfo, Compiled
    from .graph import Graph
    from .node import Node, NodeId

Path = tuple[Any, ...]

# Nodes that the grad(...) calls of one spec may add to its graph. A nested grad multiplies the graph
# by about 3 per level: 12 levels would build millions of nodes (minutes, gigabytes), while the
# bound stops them after a second. wgan_gp's gradient penalty adds about 40 nodes.
MAX_GRAD_NODES = 20_000

DEFAULT_SHARE = 0.8  # of the machine's memory: the default limit (see machine_memory)

_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30}
_UNITS["ti"] = 2**40


def parse_size(text: str) -> int:
    """Bytes from a size such as ``2GiB``, ``500MB``, ``1.5G`` or ``1000000`` (K, M, G, T are powers of
    1000, KiB, MiB, GiB, TiB powers of 1024); ValueError for anything else."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?)?b?\s*", str(text), re.IGNORECASE)
    if m is None:
        raise ValueError(f"{text!r} is not a size; write e.g. 2GiB, 500MB or 1000000 (bytes)")
    n = float(m.group(1)) * _UNITS[(m.group(2) or "").lower()]
    if not math.isfinite(n) or n < 1:
        raise ValueError(f"{text!r}: a memory bound must be at least 1 byte")
    return int(n)


def machine_memory() -> tuple[int, str]:
    """The default limit: DEFAULT_SHARE of the machine's physical memory, or of the cgroup's
    (container's) memory limit when that is lower. Physical memory rather than what is free at the
    moment, so that whether a spec is valid does not depend on what else happens to run; a share
    of it, because the system, Python and the arrays the estimate does not count need room too."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    what = "the physical memory of this machine"
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as fh:
                text = fh.read(64).strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total, what = int(text), "the memory limit of this container (cgroup)"
            break
    return int(total * DEFAULT_SHARE), f"{DEFAULT_SHARE:.0%} of {what}"


@dataclass(frozen=True)
class Limit:
    nbytes: int
    source: str  # where the number comes from, for messages

    @staticmethod
    def resolve(max_memory: int | None) -> Limit:
        if max_memory is not None:
            return Limit(max_memory, "--max-memory")
        return Limit(*machine_memory())

    def describe(self) -> str:
        return f"{human_size(self.nbytes)} ({self.source})"


HINT = "use smaller sizes or a smaller data.batch_size; or set the bound with --max-memory"


def elements(shape: Iterable[int | None], batch: int) -> int:
    """Elements of a static shape with the batch dimension (None) taken as ``batch``; exact (Python ints)."""
    n = 1
    for d in shape:
        n *= batch if d is None else int(d)
    return n


def node_bytes(n: Node, batch: int) -> int:
    return elements(n.shape, batch) * n.dtype.itemsize


def state_buffers(opt_type: str, hyper: dict[str, Any]) -> int:
    """How many parameter-sized state buffers an optimizer of this type and hyper-parameters keeps
    (read from the optimizer class's declarations; 0 for an unknown type or invalid values)."""
    from .errors import GraphError
    from .optim import OPTIMIZERS

    cls = OPTIMIZERS.get(opt_type)
    if cls is None:
        return 0
    try:
        checked = cls.check_hyper(hyper)
    except GraphError:
        return 0
    return len(cls.buffer_names(checked))


class Budget:
    """The compiler's running checks, made before each allocation."""

    def __init__(self, limit: Limit, batch: int, trained_copies: int) -> None:
        self.limit = limit
        self.batch = batch
        # bytes held per parameter byte of a trained parameter: the value, its gradient, the state
        self.trained_copies = trained_copies
        self.params = 0  # bytes of parameters (with gradients and state) allocated so far

    def parameter(self, what: str, shape: tuple[int, ...], itemsize: int, trained: bool) -> str | None:
        """None when a parameter of this shape may be allocated, else why not (and then it is not counted)."""
        need = elements(shape, 1) * itemsize * (self.trained_copies if trained else 1)
        if self.params + need <= self.limit.nbytes:
            self.params += need
            return None
        held = "with its gradient and optimizer state " if trained and self.trained_copies > 1 else ""
        return (
            f"{what} needs a parameter of shape {tuple(shape)}: {human_size(need)} {held}on top of the "
            f"{human_size(self.params)} of the parameters before it, more than the limit of {self.limit.describe()}"
        )

    def planned(self, what: str, nbytes: int, outputs: int = 0) -> str | None:
        """None when parameters of nbytes (gradients and state included) and layer outputs of
        ``outputs`` bytes (kept for backward) still fit after the parameters so far."""
        if self.params + nbytes + outputs <= self.limit.nbytes:
            return None
        kept = f" and the layer outputs with the gradients a backward needs ({human_size(outputs)} at batch size {self.batch})"
        return (
            f"{what}: with the parameters before it, the parameters (with their gradients and optimizer state)"
            f"{kept if outputs else ''} would need {human_size(self.params + nbytes + outputs)}, "
            f"more than the limit of {self.limit.describe()}"
        )

    def output(self, what: str, shape: tuple[int | None, ...], itemsize: int) -> str | None:
        """None when a value of this static shape fits the limit at the batch size, else why not."""
        size = elements(shape, self.batch) * itemsize
        if size <= self.limit.nbytes:
            return None
        return (
            f"{what} has shape {_shape(shape, self.batch)}: {human_size(size)} at batch size {self.batch}, "
            f"more than the limit of {self.limit.describe()}"
        )

    def values(self, what: str, nodes: Iterable[Node]) -> str | None:
        """None when each node's value fits the limit at the batch size, else why not."""
        for n in nodes:
            problem = self.output(what, n.shape, n.dtype.itemsize)
            if problem is not None:
                return problem
        return None


def _shape(shape: tuple[int | None, ...], batch: int) -> str:
    return "(" + ", ".join(str(batch if d is None else d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


# ---------------------------------------------------------------- data


def sample_count(src: Any) -> int | None:
    """How many samples a data source of the spec holds, when its parameters say so."""
    from .data.sources import get_source

    return get_source(src.source).sample_count(src)


@dataclass
class Item:
    """One part of the estimate. ``transient`` parts are peaks that do not add up (only the largest
    counts); the others are held for the whole run."""

    what: str
    nbytes: int
    path: Path = ()
    transient: bool = False
    node: int | None = None  # for a peak of values: the largest one then (blamed when the total is refused)


def source_items(split: str, src: Any, fields: dict[str, Any], itemsize: int) -> list[Item]:
    """The memory a data source of the spec holds (a loaded split, a replay buffer, a rollout): the
    source says (Source.memory)."""
    from .data.sources import get_source

    held = get_source(src.source).memory(src, split, fields, itemsize)
    return [Item(h.what, h.nbytes, ("data", split, h.param), transient=h.transient) for h in held]


# ---------------------------------------------------------------- the estimate


@dataclass
class Footprint:
    batch: int
    items: list[Item] = field(default_factory=list)

    @property
    def held(self) -> int:
        return sum(i.nbytes for i in self.items if not i.transient)

    @property
    def peak(self) -> Item | None:
        return max((i for i in self.items if i.transient), key=lambda i: i.nbytes, default=None)

    @property
    def total(self) -> int:
        peak = self.peak
        return self.held + (peak.nbytes if peak is not None else 0)

    def counted(self) -> list[Item]:
        """The parts of the total, largest first."""
        peak = self.peak
        parts = [i for i in self.items if not i.transient and i.nbytes] + ([peak] if peak is not None else [])
        return sorted(parts, key=lambda i: -i.nbytes)

    def summary(self, limit: Limit | None = None) -> str:
        """One line for the compile report: the total and its biggest parts."""
        parts = ", ".join(f"{i.what} {human_size(i.nbytes)}" for i in self.counted()[:3])
        bound = f" (limit {human_size(limit.nbytes)}: {limit.source})" if limit is not None else ""
        return f"memory: about {human_size(self.total)} at batch size {self.batch}{bound}; largest: {parts}"


def train_batch(compiled: Compiled) -> int:
    data = compiled.spec.data
    return data.batch_size if data is not None else 1


def estimate(compiled: Compiled, data_fields: dict[str, dict[str, Any]] | None = None) -> Footprint:
    """The memory a run of compiled needs (see the module docstring for what is counted)."""
    from .data.sources import source_fields
    from .optim.flat import FlatLayout

    g = compiled.graph
    batch = train_batch(compiled)
    itemsize = g.dtype.itemsize
    fp = Footprint(batch)
    # parameters, states and gradients are blamed on the module that holds the most
    sizes = {m: sum(node_bytes(g.record(p), 1) for p in info.params) for m, info in compiled.modules.items()}
    where: Path = ("modules", max(sizes, key=lambda m: sizes[m])) if sizes else ()
    params = g.parameters()
    fp.items.append(Item("parameters", sum(node_bytes(g.record(p), 1) for p in params), where))
    states = g.states()
    if states:
        fp.items.append(Item("states", sum(node_bytes(g.record(s), 1) for s in states), where))
    reached = {p.index: p for ph in compiled.phases for b in ph.backward for p in b.targets}
    fp.items.append(Item("gradients", sum(node_bytes(g.record(p), 1) for p in reached.values()), where))
    for name, opt in compiled.optimizers.items():
        nodes = [g.record(p) for p in opt.params]
        size = sum(node_bytes(n, 1) for n in nodes)
        copies = len(type(opt).buffer_names(opt.hyper)) + (1 if FlatLayout.fits(nodes) else 0)
        kind = compiled.spec.optimizers[name].type
        fp.items.append(Item(f"{kind} state of {name}", copies * size, ("optimizers", name)))
    spec_data = compiled.spec.data
    if spec_data is not None:
        for split in ("train", "val", "test"):
            src = getattr(spec_data, split)
            if src is None or not hasattr(src, "source"):
                continue
            fields = (data_fields or {}).get(split)
            if fields is None:
                try:
                    fields = source_fields(src.model_dump(by_alias=True), compiled.base_dir)
                except Exception:  # the compiler reported it: nothing to count
                    continue
            fp.items.extend(source_items(split, src, fields, itemsize))
    step, at = training_peak(compiled, batch)
    fp.items.append(Item("a training iteration", step, transient=True, node=at))
    ev, at = eval_peak(compiled)
    if ev:
        fp.items.append(Item("an evaluation", ev, transient=True, node=at))
    return fp


def _inputs_bytes(compiled: Compiled, batch: int) -> dict[int, int]:
    g = compiled.graph
    return {i.index: node_bytes(g.record(i), batch) for i in compiled.inputs.values()}


def training_peak(compiled: Compiled, batch: int) -> tuple[int, int | None]:
    """The most a training iteration holds besides the parameters, their gradients and the
    optimizer state: the fed inputs, the forward values each phase keeps for its backward calls,
    and a backward's working gradients (its compiled steps, each freed after its last use).
    Follows the trainer: values stay held until a ``retain_graph: false`` backward releases its path.
    An op's declared scratch (op_memory.scratch_bytes) counts while it runs."""
    from .op_memory import scratch_bytes
    from .plan import gradient_flow

    g = compiled.graph
    held = _inputs_bytes(compiled, batch)
    peak, at = sum(held.values()), max(held, key=lambda i: held[i], default=None)

    def note(extra: int = 0) -> None:
        nonlocal peak, at
        now = sum(held.values()) + extra
        if now > peak:
            peak, at = now, max(held, key=lambda i: held[i], default=at)

    for ph in compiled.phases:
        for n in g.forward_order([b.loss_node for b in ph.backward]):
            if n.op is not None:
                held[n.index] = node_bytes(n, batch)
                scratch = scratch_bytes(n, batch)
                if scratch:  # a convolution's window copy, while it runs
                    note(scratch)
        note()
        for b in ph.backward:
            note(working_gradients(g, b, ph.detach, batch))
            if not b.retain_graph:
                y = g.record(b.loss_node)
                flow = gradient_flow(y, [g.record(t) for t in b.targets], {d.index for d in ph.detach})
                for n in flow.path:  # the values the backward releases: its path but the loss and the leaves
                    if n.op is not None and n is not y:
                        held.pop(n.index, None)
    return peak, at


def working_gradients(g: Graph, b: BackwardInfo, detach: list[NodeId], batch: int) -> int:
    """The most a backward's working gradients hold at once, the gradients it leaves for the
    targets aside: a pure model of the run over the gradient's flow path (no gradient node is built).
    Walking the path backwards, as the executor does, a node's gradient is held from its first
    contribution until the node passes it on to its inputs; a further contribution, the one held and
    their sum are live together (the executor adds the two); a target reached more than once (a
    shared weight) holds each part until the parts are summed; while a node's derivative rule runs,
    its own nodes are live too (op_memory.derivative_peak: batch norm's recomputes several values of
    its input's size; a convolution's window copies). On the example specs this is 0.92x-1.02x of what
    the built plan's steps hold (with their declared scratch)."""
    from .op_memory import derivative_peak
    from .plan import gradient_edges, gradient_flow

    y = g.record(b.loss_node)
    cut = {d.index for d in detach}
    targets = {g.record(t).index for t in b.targets}
    flow = gradient_flow(y, [g.record(t) for t in b.targets], cut)
    on_path = {n.index for n in flow.path}
    live: dict[int, int] = {y.index: node_bytes(y, batch)} if y.op is not None else {}
    parts: dict[int, int] = {}
    top = sum(live.values())

    def sized(r: Node) -> int:
        return node_bytes(r, batch)

    for n in reversed(flow.path):
        if n.op is None:
            continue
        live.setdefault(n.index, node_bytes(n, batch))
        edges = [(i, p) for i, p in gradient_edges(n, cut) if p.index in on_path]
        needs = tuple(any(i == k for k, _ in edges) for i in range(len(n.inputs)))
        if edges:  # the derivative's own nodes (results included), beside the gradients held
            apart = tuple(needs[i] and p.index in targets and p.index not in parts for i, p in enumerate(n.inputs))
            top = max(top, sum(live.values()) + derivative_peak(g, n, needs, apart, batch, sized))
        for _, p in edges:
            size = node_bytes(p, batch)
            if p.index in targets:  # one part is the gradient itself (counted apart); more are summed at the end
                parts[p.index] = parts.get(p.index, 0) + 1
                live[p.index] = size * parts[p.index] if parts[p.index] > 1 else 0
            elif p.index in live:  # the new contribution and the sum of the two, beside the held one
                top = max(top, sum(live.values()) + 2 * size)
            else:
                live[p.index] = size
        top = max(top, sum(live.values()))
        live.pop(n.index, None)
    return top


def no_grad_peak(g: Graph, targets: list[Node], batch: int, fed: dict[int, int]) -> tuple[int, int | None]:
    """The most a forward of targets under no_grad holds (inputs, and each value until its last
    reader, as the executor drops them, an op's declared scratch while it runs), and the node at
    that moment's largest value."""
    from .op_memory import scratch_bytes
    from .plan import ForwardPlan

    plan = ForwardPlan(targets)  # the executor's plan: what a no_grad forward drops where
    live = sum(fed.get(n.index, 0) for n in plan.leaves)
    peak, at = live, None
    ops = [n for n in plan.nodes if n.op is not None]
    for n, drops in zip(ops, plan.drops):
        live += node_bytes(n, batch)
        now = live + scratch_bytes(n, batch)
        if now > peak:
            peak, at = now, n.index
        live -= sum(node_bytes(d, batch) for d in drops)
    return peak, at


def eval_peak(compiled: Compiled) -> tuple[int, int | None]:
    """Evaluation runs the metrics (or losses) under no_grad in batches of max(batch size, 256);
    eval.samples draws its n samples in one forward."""
    g = compiled.graph
    spec = compiled.spec
    batch = train_batch(compiled)
    if spec.data is not None and spec.eval is not None:
        batch = max(batch, 256)
        src = getattr(spec.data, spec.eval.split, None)
        n = sample_count(src) if src is not None and hasattr(src, "source") else None
        batch = min(batch, n) if n is not None else batch
    targets = [g.record(n) for n in (list(compiled.metrics.values()) or list(compiled.losses.values()))]
    best, where = 0, None
    if targets:
        best, where = no_grad_peak(g, targets, batch, _inputs_bytes(compiled, batch))
    samples = spec.eval.samples if spec.eval is not None else None
    if samples is not None and samples.node in compiled.names:
        size, at = no_grad_peak(
            g, [g.record(compiled.names[samples.node])], samples.n, _inputs_bytes(compiled, samples.n)
        )
        if size > best:
            best, where = size, at
    return best, where


def blame(compiled: Compiled, index: int | None) -> Path:
    """The spec position of the definition a node belongs to: an input's shape, or the first named
    node (input, node, loss, metric) computed from it."""
    if index is None:
        return ()
    g = compiled.graph
    for name, node in compiled.inputs.items():
        if node.index == index:
            return ("inputs", name, "shape")
    sections = {"nodes": compiled.spec.nodes, "losses": compiled.spec.losses, "metrics": compiled.spec.metrics}
    # name -> its key: its own, or the key that unpacks it (mu, logvar: enc(x))
    keys = {name: (s, key) for s, t in sections.items() for key in t for name in node_names([key])}
    for name, node in sorted(compiled.names.items(), key=lambda kv: kv[1].index):
        if name in keys and node.index >= index and index in {n.index for n in g.forward_order([node])}:
            return keys[name]
    return ()


def over_limit(compiled: Compiled, fp: Footprint, limit: Limit) -> tuple[str, Path] | None:
    """(message, where) when the estimate's total passes the limit, blaming its largest part."""
    if fp.total <= limit.nbytes:
        return None
    parts = fp.counted()
    shown = ", ".join(f"{i.what} {human_size(i.nbytes)}" for i in parts[:4])
    where = next((p for p in (i.path or blame(compiled, i.node) for i in parts) if p), ())
    return (
        f"a run of this spec needs about {human_size(fp.total)} ({shown}), more than the limit of {limit.describe()}",
        where,
    )
