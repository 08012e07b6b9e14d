"""Everything MLflow knows about a run and a sweep, written from here only.

- names.py: tag keys and the objective, each named once;
- store.py: a tracking URI made into a client, an experiment, the study storage beside it;
- record.py: what a run records: params, tags, config, the model, the test report;
- run.py: one training run's life, from its params to its one final status;
- sweep.py: a sweep's parent run, which the jobs' runs are nested under;
- sweeper.py: the loop both Hydra sweepers share (check, open the parent, launch, close).
"""
