"""The command's progress lines while the workers run (on any executor): a thread that looks at
the study every second and tells each trial that ended since, e.g.
``trial 3 complete: value 0.95 (seeds 0,1: 0.94 0.96) ... 5/16 done``."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

INTERVAL = 1.0


def describe(trial: FrozenTrial, done: int, requested: int) -> str:
    """One trial's line."""
    from .outputs import state_of

    a = trial.user_attrs
    state = state_of(trial)
    values = a.get("values") or {}
    seeds = f" (seeds {','.join(values)}: {' '.join(f'{v:.4g}' for v in values.values())})" if values else ""
    if state == "complete":
        what = f"complete: value {trial.value:.4g}{seeds}"
    elif state == "pruned":
        step = trial.last_step
        what = f"pruned{f' at step {step}' if step is not None else ''}{seeds}"
    elif a.get("surplus"):
        what = "dropped: another process took the last place at the same time"
    elif a.get("retried"):  # a fault's failure (interrupted, worker died): its retry is queued
        what = f"{a.get('error') or 'failed'} (to be retried)"
    else:
        error = str(a.get("error") or "no message").strip().splitlines()
        more = " ..." if len(error) > 1 else ""
        what = f"failed: {error[0] if error else ''}{more}"
    retry = f" (retry of trial {a['retry_of']})" if a.get("retry_of") is not None else ""
    return f"trial {trial.number}{retry} {what} ... {done}/{requested} done"


class Progress:
    """Prints (with ``say``) a line for every trial of the study that ends while it runs."""

    def __init__(self, study: optuna.Study, requested: int, say: Callable[[str], None]) -> None:
        self.study, self.requested, self.say = study, requested, say
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="onlytorch-sweep-progress", daemon=True)
        self.seen = {t.number for t in self._finished()}

    def _finished(self) -> list[FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()]

    def poll(self) -> None:
        from .outputs import state_of

        finished = self._finished()
        ended = ("complete", "pruned")
        done = sum(1 for t in finished if t.number in self.seen and state_of(t) in ended)
        for t in sorted(finished, key=lambda t: t.datetime_complete or t.datetime_start):  # type: ignore[arg-type, return-value]
            if t.number not in self.seen:
                line = describe(t, done + (state_of(t) in ended), self.requested)
                self.say(line)
                # only once said: a line that failed (a busy storage, a closed stream) is tried again
                self.seen.add(t.number)
                done += state_of(t) in ended

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            try:
                self.poll()
            except Exception:  # a busy storage must not end the command; the next look may pass
                continue

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(Exception):  # the final tables say the same
            self.poll()
