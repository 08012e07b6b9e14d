"""python -m lstm_mnist.cli.rank_command SPEC    (started by rank 0 of a DDP training, not by you)

Rank 1.. of a DDP training: the spec file rank 0 wrote (ranks.RankSpec) says everything."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from lstm_mnist.cli import quiet
from lstm_mnist.interrupts import Interrupted


def main() -> None:
    from lstm_mnist.ranks import watch_rank_0
    from lstm_mnist.training import train_rank

    watch_rank_0()
    spec = pickle.loads(Path(sys.argv[1]).read_bytes())
    quiet()
    import optuna

    try:
        train_rank(spec)
    except optuna.TrialPruned:  # at the same validation as rank 0, which records it
        sys.exit(0)
    except Interrupted as stop:  # checkpointed at the same step as rank 0, which marks the run
        sys.exit(128 + stop.signum)


if __name__ == "__main__":
    main()
