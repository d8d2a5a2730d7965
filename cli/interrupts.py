"""SIGINT and SIGTERM for the life of one command: whenever one arrives, the command ends with
exit code 130 and a short message, never click's ``Aborted!`` (exit 1), a traceback, or death by
the signal (143, -2).

The handler works in one of three modes, which the command switches as it goes:

- ``immediate`` (the default: start-up, evaluation, printing): raise KeyboardInterrupt where the
  signal lands; the command turns it into its "interrupted" ending.
- ``deferred`` (the training loop): only note the signal; the loop stops at the next iteration
  boundary, so that the checkpoint written then holds no half-done iteration. A second signal
  raises at once (the user insists; no checkpoint is written then).
- ``critical`` (writing a checkpoint or the run's status): note the signal, say that the write is
  being finished, and finish it. With ``abandon=True`` (a checkpoint, which can be large) one more
  signal raises inside the write: checkpoint writes are atomic, so the previous file stays intact.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

EXIT_INTERRUPTED = 130
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Scope:
    """The signals that arrived during one deferred or critical stretch (filled in at its end)."""

    signals: int = 0


class Interrupts:
    def __init__(self) -> None:
        self.mode = "immediate"
        self.received = 0  # every signal since install()
        self.noted = 0  # signals noted, not raised, in the current deferred/critical stretch
        self.abandon = False
        # a KeyboardInterrupt was raised: the command is ending (further signals in immediate mode are
        # only counted, so that a second Ctrl-C cannot cut the ending short: click's "Aborted!", exit 1)
        self.ending = False
        self.say = True  # in a critical stretch: say that the write is finished first
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in SIGNALS:
            # Outside the main thread (an embedding application) signal() refuses: keep its handlers.
            with contextlib.suppress(ValueError):
                self.previous[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        for sig, old in self.previous.items():
            with contextlib.suppress(ValueError):
                signal.signal(sig, old)
        self.previous = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.received += 1
        if self.mode == "immediate":
            if self.ending:
                return  # the command is already ending on an earlier signal: raising again would cut that short
            self.ending = True
            raise KeyboardInterrupt
        self.noted += 1
        if self.mode == "deferred" and self.noted > 1:
            self.ending = True
            raise KeyboardInterrupt
        if self.mode == "critical":
            if self.abandon and self.noted > 1:
                self.ending = True
                raise KeyboardInterrupt
            again = "; interrupt again to abandon it (the previous checkpoint stays)" if self.abandon else ""
            if self.say:
                _say(f"\ninterrupted: finishing the write in progress first{again}")

    def stop_requested(self) -> bool:
        """For the training loop: a signal arrived during the current deferred stretch."""
        return self.mode == "deferred" and self.noted > 0

    @contextlib.contextmanager
    def deferred(self) -> Iterator[Scope]:
        """The training loop. A signal noted during it and not acted on (it came during the last
        iteration) raises KeyboardInterrupt when the loop is done."""
        scope = Scope()
        with self._stretch("deferred", False, scope):
            yield scope
        if scope.signals:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def critical(self, abandon: bool = False, deliver: bool = True, say: bool = True) -> Iterator[Scope]:
        """A write that must not be cut halfway. With ``deliver``, a signal noted during it raises
        KeyboardInterrupt as soon as the write is done (in immediate mode); without, the caller
        reads the returned scope (it is ending the command already). ``say``: tell the user that
        the write is finished first (not for a step too short to mention)."""
        scope = Scope()
        with self._stretch("critical", abandon, scope, say):
            yield scope
        if scope.signals and deliver:
            if self.mode == "immediate":
                raise KeyboardInterrupt
            self.noted += scope.signals

    @contextlib.contextmanager
    def _stretch(self, mode: str, abandon: bool, scope: Scope, say: bool = True) -> Iterator[None]:
        saved = self.mode, self.noted, self.abandon, self.say
        self.mode, self.noted, self.abandon, self.say = mode, 0, abandon, say
        try:
            yield
        finally:
            scope.signals = self.noted
            self.mode, self.noted, self.abandon, self.say = saved


def end_process(code: object) -> None:
    """For the command's own process only (``cli()`` reading the process's command line, run as the
    program: the console script, ``python -c "...; cli()"``; not an application calling it): flush the output and
    end the process at once with ``code`` (a SystemExit's code). Python's shutdown resets the signal
    handlers to the default before it is done, so a signal arriving while the interpreter winds down
    (a second Ctrl-C, a SIGTERM just after the end) would kill the process by the signal: exit -2 or
    -15 instead of 130. Until ``os._exit`` the command's handler stays in place (a signal then ends
    the process with 130 itself). onlytorch registers nothing to run at the exit."""
    from . import STANDALONE

    if not STANDALONE:
        return
    if code is None or isinstance(code, bool):
        status = int(bool(code))
    elif isinstance(code, int):
        status = code & 0xFF if code >= 0 else 1
    else:
        _say(str(code))
        status = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def _say(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


_current: Interrupts | None = None


def current() -> Interrupts:
    """The handler of the command being run (installed by the CLI group); one is installed for
    good if the command runs some other way (its functions called from Python)."""
    global _current
    if _current is None:
        _current = Interrupts()
        _current.install()
    return _current


@contextlib.contextmanager
def installed() -> Iterator[Interrupts]:
    """Install a fresh handler for one command; restore the previous handlers afterwards."""
    global _current
    outer = _current
    _current = Interrupts()
    _current.install()
    try:
        yield _current
    finally:
        _current.restore()
        _current = outer
