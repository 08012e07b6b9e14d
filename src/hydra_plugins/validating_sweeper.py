"""Hydra's basic sweeper, checking every job's config before the first job starts.

A Hydra plugin, hence in the hydra_plugins namespace package (Hydra refuses plugins elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from lstm_mnist.config import validate


class ValidatingSweeper(BasicSweeper):
    """Hydra's basic sweeper, but every job's config is composed and value-checked before the
    first job starts: one bad value rejects the whole sweep, and nothing is recorded."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        for overrides in batch:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            try:
                validate(cfg)
            except ValueError as err:
                raise SystemExit(f"error: sweep rejected before any job ran: {err}") from None
