"""Hydra's basic sweeper (every combination of the swept values), made safe for long sweeps.

A Hydra plugin, hence in the hydra_plugins namespace package (Hydra refuses plugins elsewhere).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from lstm_mnist.sweep import SweepRun, checked_job_config, exit_if_failed, save_sweep_config
from lstm_mnist.tracking import config_hash, digest

log = logging.getLogger(__name__)


class GridSweeper(BasicSweeper):
    """Hydra's basic sweeper, plus:

    - every job's config is composed and value-checked before the first job starts: one bad
      value rejects the whole sweep, and nothing is recorded;
    - the jobs' runs are nested under one parent MLflow run (lstm_mnist/sweep.py);
    - a job that fails is recorded as FAILED and the others still run; the sweep then exits 1
      naming the failed jobs;
    - run again, the sweep skips the jobs whose exact config already FINISHED under its parent;
    - interrupted (exit 130/143), it lists the jobs that did not run.
    """

    def __init__(
        self, max_batch_size: int | None = None, params: dict | None = None, name: str = ""
    ) -> None:
        super().__init__(max_batch_size, params)
        self.name = name

    def sweep(self, arguments: list[str]) -> Any:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(self._parse_config() + arguments)
        (jobs,) = self.split_arguments(overrides, None)
        loader = self.hydra_context.config_loader
        configs = [checked_job_config(loader, self.config, job) for job in jobs]
        hashes = [config_hash(cfg) for cfg in configs]
        swept = [o.input_line for o in overrides if o.is_sweep_override()]
        swept_keys = {o.get_key_element() for o in overrides if o.is_sweep_override()}
        definition = {"sweeper": "grid", "arguments": arguments, "params": self.params}
        definition["jobs"] = [" ".join(job) for job in jobs]
        parent = SweepRun.open(
            configs[0].logger.tracking_uri,
            configs[0].logger.experiment_name,
            name=self.name or " ".join(swept) or "sweep",
            key=digest(sorted(hashes)),
            kind="grid",
            definition=OmegaConf.to_yaml(definition),
        )
        done = parent.finished_hashes()
        todo = [job for job, h in zip(jobs, hashes, strict=True) if h not in done]
        if done:
            log.info(
                f"{len(jobs) - len(todo)} of {len(jobs)} jobs already FINISHED in this sweep"
                f" (parent run {parent.run_id}); running the other {len(todo)}"
            )
        sweep_dir = save_sweep_config(self.config)

        batch_size = self.max_batch_size or len(todo) or 1
        failures, returns = [], []
        for start in range(0, len(todo), batch_size):
            jobs_now = todo[start : start + batch_size]
            batch = [job + [f"sweep.parent_run={parent.run_id}"] for job in jobs_now]
            try:
                results = self.launcher.launch(batch, initial_job_idx=start)
            except SystemExit as stop:
                parent.close("KILLED" if stop.code in (130, 143) else "FAILED")
                if stop.code in (130, 143):  # Ctrl-C / SIGTERM: see train.py
                    started = sum(1 for p in sweep_dir.iterdir() if p.name.isdigit())
                    unrun = [" ".join(job) for job in todo[started:]]
                    print(f"sweep interrupted; {len(unrun)} job(s) not run:", file=sys.stderr)
                    for num, job in enumerate(unrun, start=started):
                        print(f"  #{num}: {job}", file=sys.stderr)
                raise
            for num, (job, result) in enumerate(zip(jobs_now, results, strict=True), start=start):
                try:
                    result.return_value  # noqa: B018  (raises the job's exception)
                except Exception as err:
                    values = [o for o in job if o.split("=")[0] in swept_keys]
                    failures.append((f"#{num} {' '.join(values)}", err))
            returns.append(results)
        parent.close()
        exit_if_failed(failures, len(todo))
        return returns
