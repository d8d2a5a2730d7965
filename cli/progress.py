"""What ``onlytorch train`` shows while it trains (docs/runs.md, "What train prints").

On a terminal (stderr is a tty, no --quiet): one tqdm line redrawn in place, at most 10 times a
second: the step, elapsed time, time left, iterations per second, the mean of each loss over the
iterations since the last train row of the log (the window that row will average), and the latest
evaluation's values. Each evaluation is also printed as a line of its own above it. Not a terminal:
a line per train row of the log with the same fields (the row's window means and train metrics),
and the evaluation lines. --quiet: nothing.

tqdm is imported here, when training starts, never when the command line is parsed (``onlytorch
--help`` imports neither the engine nor tqdm)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from onlytorch.log_window import LogWindow


def _shown(values: dict[str, float]) -> str:
    """The values a line shows, in their log keys: losses, train metrics, a live source's
    statistics; not the learning rates, gradient norms or the time."""
    return "  ".join(f"{k} {v:.4g}" for k, v in values.items() if "/" in k and not k.startswith(("lr/", "grad_norm/")))


def _clock(seconds: float) -> str:
    """0:07, 12:34, 1:02:03."""
    s = int(max(seconds, 0.0))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class Progress:
    """The progress display of one training run, from step ``start`` to ``total``."""

    def __init__(self, total: int, quiet: bool, start: int = 0) -> None:
        self.total = total
        self.quiet = quiet
        self.tty = sys.stderr.isatty() and not quiet
        self.start = start
        self.t0 = time.perf_counter()
        self.logged: tuple[int, float] | None = None  # the step and time of the last log line
        self.window = LogWindow()  # the losses' means since the last train row
        self.previous: dict[str, float] = {}  # the last window's, shown until the next iteration
        self.latest: dict[str, float] = {}  # the latest evaluation's row
        self.last = 0.0  # when the bar was last redrawn
        self.bar: Any = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=start,
                file=sys.stderr,
                dynamic_ncols=True,
                # redrawn when update() says (it keeps to 10 a second itself)
                mininterval=0,
                miniters=1,
                smoothing=0.1,
                bar_format="step {n_fmt}/{total_fmt} {bar:16} {elapsed}<{remaining}  {rate_fmt}{postfix}",
            )

    def update(self, step: int, values: dict[str, float]) -> None:
        """After every iteration: its losses (and a live source's statistic)."""
        if self.bar is None:
            return
        self.window.add(values)
        now = time.perf_counter()
        if now - self.last < 0.1 and step != self.total:
            return
        self.last = now
        self.bar.set_postfix_str(self._status(), refresh=False)
        self.bar.update(step - self.bar.n)

    def _status(self) -> str:
        means = _shown(self.window.means or self.previous)
        latest = _shown(self.latest)
        return f"{means}  | {latest}" if means and latest else means or latest

    def log(self, step: int, values: dict[str, float]) -> None:
        """After every train row of the log: a line off a terminal; on one, the bar's window restarts."""
        self.previous = self.window.take()
        if self.quiet or self.tty:
            return
        now = time.perf_counter()
        done = step - self.start
        elapsed = now - self.t0
        eta = (self.total - step) * elapsed / done if done > 0 else 0.0
        fields = [f"step {step}/{self.total}", f"elapsed {_clock(elapsed)}", f"eta {_clock(eta)}"]
        fields += [s for s in (_shown(values), _shown(self.latest)) if s]
        # iterations per second since the previous line (none on the first), so that a slowdown shows
        if self.logged is not None:
            fields.append(f"{(step - self.logged[0]) / max(now - self.logged[1], 1e-9):.0f} it/s")
        self.logged = (step, now)
        click.echo("  ".join(fields), err=True)

    def evaluation(self, step: int, values: dict[str, float]) -> None:
        """An evaluation's row: a line of its own (above the bar on a terminal), and the latest values."""
        self.latest = dict(values)
        if self.quiet or not values:
            return
        line = f"eval step {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in values.items())
        if self.bar is not None:
            self.bar.set_postfix_str(self._status(), refresh=False)
            self.bar.update(step - self.bar.n)  # the bar redrawn below the line shows the evaluated step
            self.bar.write(line, file=sys.stderr)
        else:
            click.echo(line, err=True)

    def close(self) -> None:
        """End the bar's line (it stays on the screen as it was last drawn)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


__all__ = ["Progress"]
