"""Ctrl-C and SIGTERM as an exception that stops a run without being its error."""

from __future__ import annotations

import signal


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM. A BaseException, like KeyboardInterrupt: it stops the run but is not
    the run's error, and Lightning passes it through instead of swallowing it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def handle_interrupts() -> None:
    """From now on Ctrl-C and SIGTERM raise Interrupted (training checkpoints first: see
    checkpoints.CheckpointOnInterrupt)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, raise_interrupted)
