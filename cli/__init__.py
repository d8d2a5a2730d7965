"""The onlytorch command line (installed as the module ``onlytorch_cli``).

When this package is imported by the ``onlytorch`` command itself, SIGINT and SIGTERM end the
process at once with exit code 130 until the command installs its own handlers
(cli/interrupts.py): a Ctrl-C while click and the engine are still being imported is then a short
"interrupted", not a KeyboardInterrupt traceback or death by the signal (143). Nothing has been
written at that point, so leaving at once loses nothing. An application that imports this package
keeps its own handlers."""

import os as _os
import signal as _signal
import sys as _sys


def _interrupted_while_starting(signum: int, frame: object) -> None:
    _os.write(2, b"\ninterrupted\n")
    _os._exit(130)


if _os.path.basename(_sys.argv[0]) in ("onlytorch", "-c") and _signal.getsignal(_signal.SIGINT) in (
    _signal.default_int_handler,
    _signal.SIG_DFL,
):
    for _sig in (_signal.SIGINT, _signal.SIGTERM):
        _signal.signal(_sig, _interrupted_while_starting)
    # the process is the command: the group ends it with os._exit (interrupts.end_process)
    STANDALONE = True
else:
    STANDALONE = False
