"""Where a run's wall time goes: its phases, timed back to back from when its job started (for a
command's first job, when its process started) to just before its final status, and recorded on
the run as `time/<phase>_s` metrics with their sum, `time/total_s`. Back to back, so that nothing
is left uncounted: each phase is the time since the previous one ended."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from lstm_mnist.tracking.names import PHASE_PREFIX

# In the order a run goes through them:
PHASES = {
    "startup": "the interpreter, imports, Hydra's config, the value and store checks",
    "data": "MNIST read, checked and split",
    "store": "the experiment found or created, stale runs ended, a resume point found",
    "run_start": "the MLflow run started, its params, tags and config logged",
    "fit": "the Trainer built and trainer.fit: training and its validations",
    "validate": "the last step's validation, when fit's last one came before it",
    "test": "the test split",
    "report": "the test report's predictions, tables and pictures",
    "model": "the model exported and logged",
    "end": "the last system metrics and the run's cost logged",
}
TOTAL = "total"


def process_start() -> float:
    """When this process started (Unix time)."""
    import psutil

    return psutil.Process().create_time()


def metric(phase: str) -> str:
    """The run's metric of `phase` (or of TOTAL): time/fit_s."""
    return f"{PHASE_PREFIX}{phase}_s"


class PhaseClock:
    """The phases of one run, in seconds, from `since` (Unix time) on."""

    def __init__(self, since: float) -> None:
        self.last = since
        self.spent: dict[str, float] = {}

    def done(self, phase: str) -> None:
        """`phase` took the time since the previous phase ended."""
        assert phase in PHASES, phase
        now = time.time()
        self.spent[phase] = self.spent.get(phase, 0.0) + now - self.last
        self.last = now

    @contextmanager
    def phase(self, phase: str) -> Iterator[None]:
        """`phase` ends when the block does, also by an exception."""
        try:
            yield
        finally:
            self.done(phase)

    def as_metrics(self) -> dict[str, float]:
        """Every phase (0 for one the run did not go through) and their total."""
        seconds = {p: round(self.spent.get(p, 0.0), 3) for p in PHASES}
        return {**{metric(p): s for p, s in seconds.items()}, metric(TOTAL): sum(seconds.values())}
