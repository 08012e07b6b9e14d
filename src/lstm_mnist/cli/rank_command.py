"""python -m lstm_mnist.cli.rank_command    (started by rank 0 of a DDP training, not by you)

Rank 1.. of a DDP training: it imports what training needs while rank 0 starts the run, then
reads its RankSpec (ranks.py) from stdin, which says everything."""

from __future__ import annotations

import pickle
import sys

from lstm_mnist.cli import quiet
from lstm_mnist.interrupts import Interrupted


def main() -> None:
    from lstm_mnist.local_ranks import watch_rank_0
    from lstm_mnist.training import train_rank

    watch_rank_0()
    quiet()
    try:
        spec = pickle.load(sys.stdin.buffer)
    except EOFError:  # rank 0 ended before training (a refused value, a store error): so do we
        sys.exit(0)
    import optuna

    try:
        train_rank(spec)
    except optuna.TrialPruned:  # at the same validation as rank 0, which records it
        sys.exit(0)
    except Interrupted as stop:  # checkpointed at the same step as rank 0, which marks the run
        sys.exit(128 + stop.signum)


if __name__ == "__main__":
    main()
