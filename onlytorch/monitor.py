"""What chooses ``best.npz``: the monitored quantity, the split it is measured on, and whether lower
or higher is better. This module is the one place where a quantity's direction is decided.

The rule: a direction is never guessed from a name.
- A loss (a name in the spec's ``losses``) is always minimised: the optimizers minimise it.
- A quantity onlytorch computes itself has the direction declared with it: the sample scores of a
  generator (``onlytorch.metrics.SAMPLE_SCORES``) and what a live source's evaluation reports
  (its ``LiveSource.quantities``: a gym source's episode returns, onlytorch.data.gym.base). Some
  have none (an episode's length is good when long in CartPole and bad in MountainCar).
- Anything else (a spec's own ``metrics``) has only the direction the spec declares:
  ``train.monitor: {metric: accuracy, mode: max}``.

Where ``train.monitor`` is absent: a live source monitors its ``default_monitor`` (a gym source
its ``return_mean``, max); a generator whose samples are scored (``eval.samples`` over a scored
source, e.g. synthetic.ring/grid) monitors ``modes_covered`` (max); any other spec its first loss
(min). A quantity measured on data is measured on ``monitor.split``, else on the ``val`` split
when the data declares one, else on ``eval.split``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from .metrics import SAMPLE_SCORES
from .spec.diagnostics import did_you_mean

if TYPE_CHECKING:
    from .data.sources import LiveSource
    from .spec.schema import Spec

Mode = Literal["min", "max"]
SPLITS = ("train", "val", "test")
EPISODES, SAMPLES = "episodes", "samples"  # what a quantity not measured on a data split is measured on


def __getattr__(name: str) -> Any:
    """``EPISODE_QUANTITIES``: what the registered live sources' evaluations report, with their
    directions; ``BUILTIN_MODES``: every quantity onlytorch computes that has a direction (the
    sample scores and those). Computed when read: the live sources declare them (a source
    registered later, e.g. by ``onlytorch --import``, counts too)."""
    if name in ("EPISODE_QUANTITIES", "BUILTIN_MODES"):
        from .data.sources import live_quantities

        live = live_quantities()
        if name == "EPISODE_QUANTITIES":
            return live
        return {k: v for k, v in {**SAMPLE_SCORES, **live}.items() if v is not None}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Log-key prefix of an evaluation on a split other than eval.split (eval.split's is "eval"). The
# train split's is not "train": that prefix holds the metrics of the training batches.
SPLIT_PREFIX = {"val": "val", "test": "test", "train": "train_split"}


# The prefixes of the metrics log's keys that are not a phase's: a phase so named would log its
# losses (``<phase>/<loss>``) under the same keys as these, and the report, run.json's ``final``
# and the choice of best.npz would mix training batches' losses into them. ("train/<metric>" cannot
# collide: losses and metrics share one namespace.)
RESERVED_PHASE_NAMES: dict[str, str] = {
    "eval": "the evaluations on eval.split",
    **{prefix: f"the evaluations on the {split} split" for split, prefix in SPLIT_PREFIX.items() if split != "train"},
    SPLIT_PREFIX["train"]: "the evaluations on the train split",
    "lr": "the learning rates",
    "grad_norm": "the gradient norms",
    "rollout": "a gym source's training episodes",
}


def reserved_phase_name(name: str) -> str | None:
    """Why a phase may not be called ``name`` (its log keys are another quantity's), or None."""
    what = RESERVED_PHASE_NAMES.get(name)
    if what is None:
        return None
    return (
        f"a phase may not be called {name!r}: its losses would be logged as {name}/<loss>, the keys of {what}, "
        "and the two would mix in the metrics log, the report and the choice of best.npz"
    )


def direction(name: str, losses: Iterable[str], declared: Mapping[str, Mode] | None = None) -> Mode | None:
    """The direction of a quantity (its name without a log prefix): "min" for a loss, else what is
    declared for it (``builtin_modes`` of the spec, a monitor's mode), else None."""
    if name in losses:
        return "min"
    return (declared or {}).get(name)


@dataclass(frozen=True)
class Monitor:
    """The resolved monitor. ``split`` is a data split, or EPISODES / SAMPLES for quantities not
    measured on data; ``declared_split`` says whether the spec wrote ``monitor.split``."""

    metric: str
    split: str
    mode: Mode
    declared_split: bool = False

    @property
    def on_data(self) -> bool:
        return self.split in SPLITS

    def better(self, value: float, than: float | None) -> bool:
        return than is None or (value < than if self.mode == "min" else value > than)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["declared_split"]
        return out


def _scores_samples(spec: Spec) -> bool:
    """Whether evaluation scores generated samples (mode coverage over a mixture of Gaussians)."""
    from .data.sources import train_source

    found = train_source(spec)
    return spec.eval is not None and spec.eval.samples is not None and found is not None and found[0].scored


def _live(spec: Spec) -> LiveSource | None:
    """The spec's live train source (whose declaration says what its evaluation reports), or None."""
    from .data.sources import live_source

    return live_source(spec)


def _directed(live: LiveSource) -> dict[str, Mode]:
    return {k: cast("Mode", v) for k, v in live.quantities.items() if v is not None}


def builtin_modes(spec: Spec) -> dict[str, Mode]:
    """The directions of the quantities onlytorch computes in this spec's evaluation (a metric of
    the spec that happens to share such a name gets none from it)."""
    live = _live(spec)
    if live is not None:
        return _directed(live)
    return dict(SAMPLE_SCORES) if _scores_samples(spec) else {}


def available(spec: Spec) -> list[str]:
    """The quantities an evaluation of this spec reports (what a monitor may name)."""
    live = _live(spec)
    if live is not None:
        return list(live.quantities)
    return [*spec.losses, *spec.metrics, *(SAMPLE_SCORES if _scores_samples(spec) else ())]


def default_split(spec: Spec) -> str:
    if spec.data is not None and spec.data.val is not None:
        return "val"
    return spec.eval.split if spec.eval is not None else "test"


def resolve(spec: Spec) -> Monitor | None:
    """The monitor of a valid spec (see the module's docstring); None when nothing is evaluated
    or the spec has nothing to monitor."""
    live = _live(spec)
    if spec.eval is None and live is None:
        return None
    m = spec.train.monitor if spec.train is not None else None
    if m is not None:
        metric = m.metric
    elif live is not None:
        if live.default_monitor is None:
            return None
        metric = live.default_monitor
    elif _scores_samples(spec):
        metric = "modes_covered"
    elif spec.losses:
        metric = next(iter(spec.losses))
    else:
        return None
    mode = direction(metric, spec.losses, builtin_modes(spec)) or (m.mode if m is not None else None)
    if mode is None:
        return None  # a metric without a declared direction: validate refuses the spec
    if live is not None:
        split = EPISODES
    elif metric in SAMPLE_SCORES and _scores_samples(spec):
        split = SAMPLES
    else:
        split = (m.split if m is not None else None) or default_split(spec)
    return Monitor(metric, split, mode, declared_split=m is not None and m.split is not None)


def directions(spec: Spec) -> dict[str, Mode]:
    """Every quantity of the spec with a declared direction (recorded in run.json for the report)."""
    out: dict[str, Mode] = {name: "min" for name in spec.losses}
    out.update(builtin_modes(spec))
    m = resolve(spec)
    if m is not None:
        out[m.metric] = m.mode
    return out


def selection_names(spec: Spec, monitor: Monitor) -> list[str] | None:
    """The metrics and losses a selection evaluation computes: eval.metrics (or its default) plus
    the monitored quantity. None: the evaluation's own default."""
    ev = spec.eval
    names = list(ev.metrics) if ev is not None and ev.metrics else list(spec.metrics) or list(spec.losses)
    if monitor.on_data and monitor.metric not in names:
        names.append(monitor.metric)
    return names


def selection_prefix(spec: Spec, monitor: Monitor) -> str:
    """The log prefix of the rows that choose best.npz: "eval" when they are eval.split's."""
    if not monitor.on_data or spec.eval is None or monitor.split == spec.eval.split:
        return "eval"
    return SPLIT_PREFIX[monitor.split]


# ---------------------------------------------------------------- validation (called by the compiler)

ErrorFn = Callable[..., None]


def check(spec: Spec, broken: set[str], error: ErrorFn) -> None:
    """Diagnostics for ``train.monitor`` and for a best checkpoint chosen on the split the final
    evaluation reports. ``error(code, message, path, hint=...)`` reports at a spec path."""
    live = _live(spec)
    builtin = [*live.quantities] if live is not None else [*SAMPLE_SCORES] if _scores_samples(spec) else []
    for section in ("losses", "metrics"):
        for name in getattr(spec, section):
            if name in builtin:
                what = "whole evaluation episodes" if live is not None else "the generated samples"
                error(
                    "E-DUP",
                    f"{section[:-1]} {name!r} has the name of a score the evaluation computes from {what} "
                    f"({', '.join(builtin)}): the metrics log, run.json and the report would confuse the two",
                    (section, name),
                    key=True,
                    hint=f"rename it, e.g. {name}_{section[:-1]}",
                )
    train = spec.train
    m = train.monitor if train is not None else None
    if m is not None and not _check_declared(spec, m, broken, error):
        return  # no warning about a monitor that is itself wrong
    if train is None or not train.eval_every or spec.eval is None or "<train.monitor>" in broken:
        return
    mon = resolve(spec)
    # Choosing on val what is reported on val is what a val split is for; on test (or train) the
    # reported numbers are no longer those of unseen data.
    if mon is not None and mon.on_data and mon.split == spec.eval.split != "val" and not mon.declared_split:
        split = mon.split
        error(
            "W-SELECT",
            f"best.npz is chosen by {mon.metric} on the {split} split, the split the final evaluation reports: "
            f"the model is selected on the {'test set' if split == 'test' else 'training data'}, "
            f"so best.npz's {split} numbers are optimistic",
            ("train", "eval_every"),
            hint="declare a validation split (data.val: {from_split: train, fraction: 0.1}), which selection "
            f"then uses, or state the choice with train.monitor.split: {split}",
        )


def _check_declared(spec: Spec, m: Any, broken: set[str], error: ErrorFn) -> bool:
    """Report what is wrong with a declared monitor; True when nothing is."""
    where = ("train", "monitor")
    reported = False

    def report(*args: Any, **kwargs: Any) -> None:
        nonlocal reported
        reported = True
        error(*args, **kwargs)

    if spec.eval is None and _live(spec) is None:
        if "<eval>" in broken:
            return False  # the eval section has its own diagnostic
        report(
            "E-MONITOR",
            "train.monitor needs an eval section: evaluations are what choose best.npz",
            where,
            hint="add eval: {split: test} (and train.eval_every to evaluate during training)",
        )
        return False
    names = available(spec)
    if m.metric not in names:
        if m.metric in broken:
            return False
        extra = " (a gym source is evaluated in whole episodes)" if _live(spec) is not None else ""
        report(
            "E-NAME",
            f"train.monitor: unknown metric {m.metric!r}{extra}; evaluation reports: {', '.join(names) or 'nothing'}",
            (*where, "metric"),
            hint=did_you_mean(m.metric, names),
        )
        return False
    declared = direction(m.metric, spec.losses, builtin_modes(spec))
    if declared is None and m.mode is None:
        report(
            "E-MONITOR",
            f"train.monitor: {m.metric} has no declared direction (onlytorch never guesses one from a name): "
            "add mode: max (higher is better) or mode: min (lower is better)",
            (*where, "metric"),
            hint=f"monitor: {{metric: {m.metric}, mode: max}} when higher is better, mode: min when lower",
        )
    elif declared is not None and m.mode is not None and m.mode != declared:
        what = "a loss, always minimised" if m.metric in spec.losses else f"declared {declared}"
        report(
            "E-MONITOR",
            f"train.monitor: {m.metric} is {what}; mode: {m.mode} would keep its worst checkpoint",
            (*where, "mode"),
            hint=f"write mode: {declared}, or leave mode out",
        )
    if m.split is not None:
        if _live(spec) is not None or m.metric in SAMPLE_SCORES:
            what = "whole episodes" if _live(spec) is not None else "generated samples"
            report(
                "E-MONITOR",
                f"train.monitor.split does not apply: {m.metric} is measured on {what}, not on a data split",
                (*where, "split"),
                hint="leave split out",
            )
        elif spec.data is not None and getattr(spec.data, m.split) is None and f"<data.{m.split}>" not in broken:
            declared_splits = [s for s in SPLITS if getattr(spec.data, s) is not None]
            report(
                "E-DATA",
                f"train.monitor uses the {m.split} split, which data does not define "
                f"(it defines: {', '.join(declared_splits)})",
                (*where, "split"),
                hint=f"declare data.{m.split} (e.g. {{from_split: train, fraction: 0.1}}) or monitor another split",
            )
    return not reported
