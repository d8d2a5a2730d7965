"""Evaluation of a trainer's model under no_grad: the spec's eval metrics on a split, the scores of
a generator's samples (mode coverage over a mixture of Gaussians, saved for the report), the
episodes of a gym source, and the evaluations during a run that choose best.npz
(``RunEvaluation``). The run directory itself (files, run.json, the log) is onlytorch/run.py's."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

import numpy as np

from . import checkpoint as ckpt
from . import monitor, stopping
from .errors import GraphError
from .metrics import mode_coverage

if TYPE_CHECKING:
    from .compile import Compiled
    from .run import Run
    from .train import Trainer


def evaluate(
    compiled: Compiled,
    trainer: Trainer,
    run_dir: pathlib.Path | None = None,
    split: str | None = None,
    names: list[str] | None = None,
    samples: bool = True,
) -> dict[str, float]:
    """The spec's eval metrics (or ``names``) on its eval split (or ``split``), under no_grad, plus
    the scores of generated samples (unless ``samples`` is False; with ``run_dir`` the samples are
    saved for the report); the episodes' returns for a gym source."""
    ev = compiled.spec.eval
    if trainer.live is not None:
        return trainer.episodes()
    if ev is None:
        return {}
    values = trainer.evaluate(split or ev.split, names if names is not None else ev.metrics)
    if ev.samples is not None and samples:
        inputs, conditions = sample_conditions(trainer, ev.samples.node, split or ev.split, ev.samples.n)
        fake = trainer.sample(ev.samples.node, ev.samples.n, inputs=inputs)
        scored = sample_scores(compiled, trainer, fake)
        values.update(scored)
        # saved whatever their shape: the report draws 2-D points, and image samples are scored offline
        if run_dir is not None:
            extra: dict[str, np.ndarray] = {}
            train = trainer.data.get("train", {})
            # The real data a generator imitates: the training field shaped like its samples.
            real = next(
                (train[f] for f in trainer.fields.values() if f in train and train[f].shape[1:] == fake.shape[1:]), None
            )
            if real is not None:
                extra["real"] = real[: ev.samples.n]
            centres, _ = mixture(compiled)
            if centres is not None:
                extra["centres"] = centres
            extra.update({f"{FIELD_PREFIX}{f}": v for f, v in conditions.items()})
            ckpt.save(run_dir / "samples.npz", {"fake": fake, **extra})
    return values


# samples.npz's key prefix of the fields a conditional generator's samples were drawn with
FIELD_PREFIX = "field/"


def sample_conditions(
    trainer: Trainer, node: str, split: str, n: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """What a conditional generator (a sample node that reads data inputs, e.g. a class label) is
    fed: the evaluated split's rows in order, the first ``n`` of them, starting again from the first
    row when the split has fewer than ``n``, so that every sample has a condition and sample i
    was asked for row i % len(split). Returns the values by input name and by field name (the
    latter saved with the samples); both empty for a generator of noise alone."""
    reads = [a.name for a in trainer.g.forward_order([node]) if a.kind == "input" and a.name in trainer.fields]
    if not reads:
        return {}, {}
    fields = sorted({trainer.fields[name] for name in reads})
    arrays = trainer.data.get(split)
    # validate refuses both for eval.split (E-DATA, E-SAMPLES); `onlytorch eval --split` may ask for another
    if arrays is None:
        raise GraphError(f"eval.samples: there is no {split!r} split to draw the conditions of {node} from")
    missing = [f for f in fields if f not in arrays]
    if missing:
        raise GraphError(f"eval.samples: {node} reads the field(s) {', '.join(missing)}, which the {split} split lacks")
    rows = np.arange(n) % len(next(iter(arrays.values())))
    by_field = {f: arrays[f][rows] for f in fields}
    return {name: by_field[trainer.fields[name]] for name in reads}, by_field


def mixture(compiled: Compiled) -> tuple[np.ndarray | None, float]:
    """The mode centres and std of a mixture-of-Gaussians training source, if it is one."""
    from .data.sources import scored_modes

    modes = scored_modes(compiled.spec)
    return modes if modes is not None else (None, 0.0)


def sample_scores(compiled: Compiled, trainer: Trainer, fake: np.ndarray) -> dict[str, float]:
    centres, std = mixture(compiled)
    if centres is None or fake.ndim != 2 or fake.shape[1] != centres.shape[1]:
        return {}
    scores = mode_coverage(fake, centres, std)
    return {"modes_covered": scores["modes_covered"], "high_quality": scores["high_quality"]}


class RunEvaluation:
    """The evaluations of a run while it trains: each is logged in the run directory as one "eval"
    row, and the monitored quantity chooses best.npz (see onlytorch/monitor.py)."""

    def __init__(self, run: Run, trainer: Trainer) -> None:
        self.run = run
        self.trainer = trainer
        self.c = run.c

    def evaluate(self, step: int, final: bool | None = None) -> dict[str, float]:
        """An evaluation during training, logged as one "eval" row: on the monitor's split, which
        chooses best.npz (keys ``<split>/<name>``, or ``eval/<name>`` when it is eval.split), and at
        the last step (``final``, or the evaluation that ends the run early) on eval.split too.
        The monitored value then steps the plateau schedules and the early-stopping counter
        (onlytorch/stopping.py). Returns eval.split's values ({} when this evaluation did not cover
        eval.split)."""
        m = monitor.resolve(self.c.spec)
        path = self.run.path
        if final is None:
            final = step >= self.trainer.total_steps()
        on_eval_split = True
        if m is None or not m.on_data:
            values = evaluate(self.c, self.trainer, path)
            selection, row, out = values, {f"eval/{k}": v for k, v in values.items()}, values
        else:
            prefix = monitor.selection_prefix(self.c.spec, m)
            names = monitor.selection_names(self.c.spec, m)
            on_eval_split = prefix == "eval"
            # generated samples belong to eval.split's evaluation (they depend on no split)
            selection = evaluate(self.c, self.trainer, path, m.split, names, samples=on_eval_split)
            row = {f"{prefix}/{k}": v for k, v in selection.items()}
            out = selection if on_eval_split else {}
        # best.npz holds the state as evaluated: written before the value acts on the schedules
        self.run.record_best(step, m, selection)
        value = selection.get(m.metric) if m is not None else None
        if stopping.observe(self.c.schedules, self.trainer.stopping, step, value):
            final = True
        if final and not on_eval_split:
            out = evaluate(self.c, self.trainer, path)
            row.update({f"eval/{k}": v for k, v in out.items()})
        self.run.record_evaluation(step, row)
        return out

    def evaluated_at(self, step: int) -> bool:
        """Whether the run's log holds an evaluation of this step (one a resume need not repeat)."""
        return any(r.get("kind") == "eval" and r.get("step") == step for r in self.run.rows)

    def last(self) -> dict[str, float]:
        """eval.split's values of the last evaluation in the log ({} when there is none)."""
        rows = [r for r in self.run.rows if r.get("kind") == "eval"]
        return {k.removeprefix("eval/"): v for k, v in rows[-1].items() if k.startswith("eval/")} if rows else {}
