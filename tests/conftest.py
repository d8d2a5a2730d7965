"""Test-session setup shared by every test."""

import signal

# A test run started in the background by a non-interactive shell (`pytest &`, `nohup ... &`)
# inherits SIGINT ignored, and so would every command the tests start. The CLI's signal tests need
# the disposition a terminal gives (the default): restore it, so that the commands they start get it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
