"""A sweep's budgets: wall time from its start (`hydra.sweeper.timeout_s`) and compute
(`hydra.sweeper.max_compute_s`: its jobs' seconds x their cores, or GPUs where they had them).
Once one is spent no job or trial starts; those running finish. The sweep's driver hands the
budget to each job (sweep.since, sweep.timeout_s, sweep.max_compute_s), so that a job of a
detached sweep can tell, and an asynchronous worker before each trial."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lstm_mnist.schema import BUDGET_RULES, check

if TYPE_CHECKING:
    from lstm_mnist.tracking import SweepRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    since: float  # Unix time this start of the sweep began: what both budgets count from
    timeout_s: float | None = None
    max_compute_s: float | None = None

    def __post_init__(self) -> None:
        check(BUDGET_RULES, lambda name: getattr(self, name), prefix="hydra.sweeper.")

    def __bool__(self) -> bool:
        return self.timeout_s is not None or self.max_compute_s is not None

    def overrides(self) -> list[str]:
        """How a job is told it."""
        if not self:
            return []
        lines = [f"sweep.since={self.since}"]
        for name in ("timeout_s", "max_compute_s"):
            if (value := getattr(self, name)) is not None:
                lines.append(f"sweep.{name}={value}")
        return lines

    def spent(self, sweep: SweepRun) -> str | None:
        """Which budget is spent ("timeout_s", "max_compute_s"), or None; a spent one is
        recorded on the sweep's parent run (its `stopped_by` tag), once."""
        from lstm_mnist.tracking import compute

        reason = None
        if self.timeout_s is not None and time.time() - self.since >= self.timeout_s:
            reason = "timeout_s"
        elif self.max_compute_s is not None:
            runs = [r for r in sweep.children() if r.info.start_time >= self.since * 1000]
            if compute.total(runs).budgeted_s >= self.max_compute_s:
                reason = "max_compute_s"
        if reason is not None:
            limit = getattr(self, reason)
            log.info(f"the sweep's budget hydra.sweeper.{reason}={limit:g} is spent: no job starts")
            sweep.stopped_by(reason)
        return reason
