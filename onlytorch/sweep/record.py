"""What the sweep directory's sweep.json holds, read back, and how a study's trials count toward
the requested number: shared by the workers, the tables and the command (one definition of
"done": complete + pruned; of "failed": failures of the trial itself, not of its process)."""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

SWEEP_JSON = "sweep.json"


class RecordError(Exception):
    """sweep.json cannot be read, or is not a sweep's record."""


def read_info(sweep_dir: pathlib.Path) -> dict[str, Any]:
    """sweep.json's content; RecordError when it cannot be read."""
    try:
        info = json.loads((sweep_dir / SWEEP_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RecordError(f"{sweep_dir / SWEEP_JSON}: cannot read the sweep's record: {e}") from None
    if not isinstance(info, dict):
        raise RecordError(f"{sweep_dir / SWEEP_JSON}: not a sweep record")
    return info


def identity_json(identity: dict[str, Any]) -> Any:
    """An identity as JSON holds it (paths as text), so that two can be compared."""
    return json.loads(json.dumps(identity, sort_keys=True, default=str))


@dataclass
class Counts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0  # failures of the trial itself (a fault's failure is retried and not counted)
    running: int = 0
    waiting: int = 0
    faults: int = 0  # failed by a fault (worker died, interrupted) and retried
    surplus: int = 0  # asked by two machines at once for the last place: the later one stepped back

    @property
    def done(self) -> int:
        return self.complete + self.pruned


def count(trials: list[FrozenTrial]) -> Counts:
    from optuna.trial import TrialState

    c = Counts()
    for t in trials:
        if t.state == TrialState.COMPLETE:
            c.complete += 1
        elif t.state == TrialState.PRUNED:
            c.pruned += 1
        elif t.state == TrialState.RUNNING:
            c.running += 1
        elif t.state == TrialState.WAITING:
            c.waiting += 1
        elif t.state == TrialState.FAIL:
            if t.user_attrs.get("surplus"):
                c.surplus += 1
            elif t.user_attrs.get("retried"):
                c.faults += 1
            else:
                c.failed += 1
    return c
