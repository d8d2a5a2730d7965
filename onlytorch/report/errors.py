"""Why a report cannot be made: the exceptions every part of the report raises."""

from __future__ import annotations


class ReportError(Exception):
    """A run directory that cannot be reported on (a broken file); the message says why."""


class NotARunDir(ReportError):
    """The path is not a run directory (no ``run.json``)."""


class PlotsUnavailable(ReportError):
    """matplotlib (the ``plot`` extra) is not installed."""
