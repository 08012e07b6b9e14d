"""Optuna search, in four parts: study.py (the study: storage, heartbeat, retries, pruner,
sampler, and the one way a trial is ended), sweeper.py (the sweeper on the sweep loop), worker.py
(an asynchronous worker: ask, train, tell until the study is full) and callbacks.py (what a
trial's training reports: its heartbeat, its objective to the pruner)."""
