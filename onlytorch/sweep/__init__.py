"""Sweeps and seed studies (``onlytorch sweep``): a sweep file names a base spec, a search space
over the same dotted paths as ``--set``, the seeds each trial runs and an Optuna sampler and
pruner; trials run as ordinary runs in a sweep directory, on local worker processes or Ray tasks,
with the Optuna study as the single record. Needs the ``sweep`` extra (``sweep-ray`` for Ray);
nothing here imports optuna or ray until a sweep runs.

The library entry, ``onlytorch.sweep.run(file, out=None, *, workers=1, ...) -> SweepResult``, and
its exceptions live in ``onlytorch.sweep.runner`` and are imported on first use (``__getattr__``),
so that ``import onlytorch.sweep`` stays light."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import InvalidSweep, SweepError, SweepRefused, SweepResult, run

__all__ = ["InvalidSweep", "SweepError", "SweepRefused", "SweepResult", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
