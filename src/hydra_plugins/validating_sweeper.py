"""Hydra's basic sweeper, checking every job's config before the first job starts.

A Hydra plugin, hence in the hydra_plugins namespace package (Hydra refuses plugins elsewhere).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from lstm_mnist.config import validate


class ValidatingSweeper(BasicSweeper):
    """Hydra's basic sweeper, but every job's config is composed and value-checked before the
    first job starts: one bad value rejects the whole sweep, and nothing is recorded. When a job
    is interrupted (exit 130/143), the jobs that did not run are listed."""

    def sweep(self, arguments: list[str]) -> Any:
        try:
            return super().sweep(arguments)
        except SystemExit as stop:
            if stop.code in (130, 143):  # Ctrl-C / SIGTERM: see train.py
                sweep_dir = Path(self.config.hydra.sweep.dir)
                started = sum(1 for p in sweep_dir.iterdir() if p.name.isdigit())
                jobs = [" ".join(o) for batch in self.overrides for o in batch]
                print(f"sweep interrupted; {len(jobs) - started} job(s) not run:", file=sys.stderr)
                for num, job in enumerate(jobs[started:], start=started):
                    print(f"  #{num}: {job}", file=sys.stderr)
            raise

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        for overrides in batch:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            try:
                validate(cfg)
            except ValueError as err:
                raise SystemExit(f"error: sweep rejected before any job ran: {err}") from None
