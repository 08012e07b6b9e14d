"""This project's Hydra sweepers, as Hydra finds them: thin facades whose implementation
(_grid.py, _optuna.py, on lstm_mnist/tracking/sweeper.py) is imported only when a sweep starts.
Hydra imports every plugin module at start-up, so `--help` and a typo pay for none of it.
(Hydra refuses plugins outside the hydra_plugins namespace package.)
"""

from __future__ import annotations

import importlib
from abc import abstractmethod
from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig


class LazySweeper(Sweeper):
    @property
    @abstractmethod
    def implementation(self) -> str:
        """module:class of the sweeper that does the work"""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        module, name = self.implementation.split(":")
        self.impl = getattr(importlib.import_module(module, __name__), name)(**self.settings)
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)


class GridSweeper(LazySweeper):
    """Every combination of the swept values (conf/hydra/sweeper/grid.yaml)."""

    implementation = "._grid:GridSweep"


class OptunaSweeper(LazySweeper):
    """Optuna search with pruning (conf/hydra/sweeper/optuna.yaml)."""

    implementation = "._optuna:OptunaSweep"
