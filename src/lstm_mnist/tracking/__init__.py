"""Everything MLflow knows about a run and a sweep, written from here only.

- names.py: tag keys and the objective, each named once;
- store.py: a tracking URI made into a client, an experiment, the study storage beside it;
- record.py: what a run records: params, tags, config, the model, the test report;
- run.py: one training run's life, from its params to its one final status;
- sweep.py: a sweep's parent run, which the jobs' runs (or its configurations' runs) are nested
  under, with its best configuration and Pareto set;
- configurations.py: runs grouped by configuration and ranked (by mean, or Pareto dominance);
- model_policy.py: artifacts.model=best, the logged models of the best configurations only;
- sweeper.py: the loop both Hydra sweepers share (check, open the parent, launch, close).
"""
