"""The sweeping wing: how a sweep runs its jobs and ends.

- loop.py: the one sweep loop every sweeper runs (check, open the parent, launch, close);
- grid.py: every combination of the swept values;
- optuna/: Optuna search: the study (its one home), the sweeper, the asynchronous worker and the
  callbacks a trial trains with;
- model_policy.py: artifacts.model=best, logged models kept for the best configurations only.

Hydra finds the sweepers through the thin facades in hydra_plugins/lstm_mnist_sweepers/.
"""
