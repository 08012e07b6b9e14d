"""Early stopping on the objective: training ends after `patience` validations without a better
value (Lightning's EarlyStopping, pointed at conf/config.yaml's objective)."""

from __future__ import annotations

from omegaconf import DictConfig
from pytorch_lightning.callbacks import EarlyStopping

from lstm_mnist.tracking.names import Objective


def early_stopping(cfg: DictConfig) -> list[EarlyStopping]:
    """The callback when `patience` is set; none otherwise."""
    if cfg.patience is None:
        return []
    objective = Objective.from_config(cfg)
    mode = "max" if objective.maximize else "min"
    return [EarlyStopping(monitor=objective.metric, mode=mode, patience=cfg.patience)]
