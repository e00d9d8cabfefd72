"""Optuna's log of a trial that raised, made quiet: the ``optarena`` command reports the error itself, in one line.

``study.optimize(catch=())`` logs the failure with the traceback and then re-raises the error, which
:func:`optarena.arena.cli.main` reports in one line — a user's mistake, or Ctrl-C — or, for a bug, Python shows with
its traceback. Without :func:`quiet_failed_trials` a Ctrl-C or a user's mistake would print some 25 lines of
traceback first. It imports neither Optuna nor the rest of the arena (``optarena list`` stays light).
"""

from __future__ import annotations

import logging
import re


class QuietFailedTrials(logging.Filter):
    """Drop Optuna's report of a trial that raised (its message and full traceback)."""

    _FAILED = re.compile(r"Trial (\d+) failed with (parameters|value)")

    def __init__(self) -> None:
        super().__init__()
        self.raised: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        match = self._FAILED.match(str(record.msg))
        if match is None:
            return True
        if match.group(2) == "parameters" and record.exc_info is not None:
            self.raised.add(match.group(1))
            return False
        return not (match.group(2) == "value" and match.group(1) in self.raised)


def quiet_failed_trials() -> None:
    """Install :class:`QuietFailedTrials` on Optuna's optimize logger (once)."""
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, QuietFailedTrials) for f in logger.filters):
        logger.addFilter(QuietFailedTrials())
