"""Two checks of what a valid sweep would silently do wrong, on the trial spec (the base spec
with ``set`` and the monitor applied), each a function that says the problem and its fix (or
None); ``load.py`` reports them located in the sweep file.

- ``pruner_problem`` (E-SWEEP-PRUNE): a pruner that no evaluation can feed in time. The trainer
  evaluates every ``train.eval_every`` iterations and once after the last (``train_loop`` in
  onlytorch/train.py, and the final evaluation in app.py); the pruner sees each of them, so
  without an evaluation before a run's last iteration it can stop nothing: with one seed no trial
  would ever be pruned (with several it can still skip the seeds after one that ends badly, which
  is allowed). With ``train.epochs`` a run's length depends on the data (epochs x batches per
  epoch), so only a missing ``eval_every`` is certain; a space entry that writes the length or
  eval_every leaves the question to each trial.
- ``chosen_on_test`` (W-SWEEP-TEST): the objective measured on the test split (the monitor
  that onlytorch.monitor resolves: a spec without a val split falls back to eval.split) chooses
  the parameters on the test set, so the sweep's best value is optimistic. Unlike the spec's
  W-SELECT (one run choosing best.npz on the split its final evaluation reports, silenced by
  declaring the split) it holds for a declared ``split: test`` too: a sweep chooses among trials."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

EVERY_PATH = ("train", "eval_every")
LENGTH_PATHS = (("train", "steps"), ("train", "epochs"))

Problem = tuple[str, str]  # the message and the hint


def pruner_problem(
    pruner: str, spec: Any, seeds: list[int], space_writes: Callable[[tuple[str, ...]], bool]
) -> Problem | None:
    """Why the pruner ``pruner`` would never prune a trial of ``spec`` (the trial spec), or None.
    ``space_writes(path)``: whether a space entry writes that part of the spec."""
    train = spec.train
    if pruner == "none" or len(seeds) != 1 or train is None:
        return None
    every, steps = train.eval_every, train.steps
    varied_length = any(space_writes(p) for p in LENGTH_PATHS)
    if every is None and not space_writes(EVERY_PATH):
        problem = "the trial spec has no train.eval_every, so each run is evaluated only once, after its last step"
        fix = "set train.eval_every in set:"
    elif (
        every is not None
        and steps is not None
        and every >= steps
        and not space_writes(EVERY_PATH)
        and not varied_length
    ):
        problem = (
            f"the trial spec's train.eval_every ({every}) is not below train.steps ({steps}), so each run is "
            "evaluated only once, after its last step"
        )
        fix = "set train.eval_every below train.steps in set:"
    else:
        return None
    # a tenth of the run, so that pruning can start early; without a known length, the usual 100
    example = steps // 10 if steps is not None and steps >= 20 and not varied_length else 100
    return (
        f"pruner {pruner} has nothing to act on: {problem}, when nothing is left to stop; no trial would ever be "
        "pruned (the trainer evaluates every train.eval_every iterations, and once at the end)",
        f"{fix}, e.g. train.eval_every: {example} (or pruner: {{type: none}})",
    )


def chosen_on_test(spec: Any, mon: Any, sweep_monitor_split: str | None) -> Problem | None:
    """Why choosing by ``mon`` (the resolved monitor of the trial spec) is choosing on the test set,
    or None. ``sweep_monitor_split``: the split the sweep file's own monitor names, if any."""
    if mon.split != "test":
        return None
    has_val = spec.data is not None and spec.data.val is not None
    why = (
        "the sweep's monitor: says split: test"
        if sweep_monitor_split == "test"
        else "the base spec's train.monitor says split: test"
        if mon.declared_split
        else "the base spec declares no val split, so the monitor falls back to eval.split"
    )
    fixes = (
        []
        if has_val
        else ["declare a val split in the base spec's data (data.val: {from_split: train, fraction: 0.1}, or in set:)"]
    )
    if mon.declared_split:
        fixes.append(f"monitor: {{metric: {mon.metric}, split: val, mode: {mon.mode}}}")
    return (
        f"the sweep chooses its parameters by {mon.metric} on the test split ({why}): the best trial's value is "
        "measured on the data it was selected on, so it is optimistic",
        " and ".join(fixes) + ("" if mon.declared_split else ", which the monitor then uses by default"),
    )
