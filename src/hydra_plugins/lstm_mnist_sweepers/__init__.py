"""This project's Hydra sweepers, as Hydra finds them: thin facades whose implementation
(lstm_mnist/sweeping/) is imported only when a sweep starts, as Hydra's own Optuna sweeper does.
Hydra imports every plugin module at start-up, so `--help` and a typo pay for none of it.
(Hydra refuses plugins outside the hydra_plugins namespace package.)
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig


class Facade(Sweeper):
    """Hands everything to the sweeper `implementation()` returns, imported when called."""

    kind = ""  # its settings' rules in lstm_mnist.schema.SWEEPER_RULES

    @staticmethod
    def implementation() -> type[Sweeper]:
        raise NotImplementedError

    def __init__(self, **settings: Any) -> None:
        self.settings = settings

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        # checked and built here, not in __init__: Hydra would wrap a bad setting's error in its
        # own; a wrong type or range is one line (ValueError), before the implementation's import
        from lstm_mnist.schema import validate_sweeper

        validate_sweeper(self.kind, self.settings)
        self.impl = self.implementation()(**self.settings)
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)


class GridSweeper(Facade):
    """Every combination of the swept values (conf/hydra/sweeper/grid.yaml)."""

    kind = "grid"

    @staticmethod
    def implementation() -> type[Sweeper]:
        from lstm_mnist.sweeping.grid import GridSweep

        return GridSweep


class OptunaSweeper(Facade):
    """Optuna search with pruning (conf/hydra/sweeper/optuna.yaml)."""

    kind = "optuna"

    @staticmethod
    def implementation() -> type[Sweeper]:
        from lstm_mnist.sweeping.optuna.sweeper import OptunaSweep

        return OptunaSweep
