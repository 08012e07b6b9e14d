"""Every combination of the swept values, as Hydra's basic sweeper runs them, tracked: all jobs
checked before the first starts, one parent MLflow run, a failed job does not stop the others,
and the jobs that already FINISHED under the parent are skipped when the sweep is run again."""

from __future__ import annotations

import itertools
import logging

from hydra.core.override_parser.overrides_parser import OverridesParser

from lstm_mnist.sweeping.loop import Configuration, Job, Plan, TrackedSweeper
from lstm_mnist.tracking import SweepRun
from lstm_mnist.tracking.identity import config_hash, digest, group_hash, run_params
from lstm_mnist.tracking.names import SEED

log = logging.getLogger(__name__)


class GridSweep(TrackedSweeper):
    kind = "grid"

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict | None = None,
        name: str = "",
        timeout_s: float | None = None,
        max_compute_s: float | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.params = params or {}
        self.name = name
        self.timeout_s, self.max_compute_s = timeout_s, max_compute_s

    def plan(self, arguments: list[str]) -> Plan:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        given = [f"{k}={v}" for k, v in self.params.items()] + arguments
        choices: dict[str, list[str]] = {}  # key -> "key=value" for each value; the last wins
        swept = []
        for override in parser.parse_overrides(given):
            key = override.get_key_element()
            if override.is_sweep_override():
                if not override.is_discrete_sweep():
                    raise ValueError(
                        f"{override.input_line}: the grid sweeper takes lists of values"
                    )
                choices[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
                swept.append(override.input_line)
            else:
                choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        combos = [list(c) for c in itertools.product(*choices.values())]
        configs = [self.checked_config(overrides) for overrides in combos]
        swept_keys = {line.split("=")[0] for line in swept}
        replicates = {cfg.replicates for cfg in configs}
        if len(replicates) > 1:
            raise ValueError(f"replicates={','.join(map(str, sorted(replicates)))}: give one value")
        if (n := replicates.pop()) > 1:  # each combination with seeds seed, seed+1, ...
            if "seed" in swept_keys:
                raise ValueError(f"replicates={n} and a swept seed: give one or the other")
            combos = [
                combo + [f"seed={cfg.seed + r}"]
                for combo, cfg in zip(combos, configs, strict=True)
                for r in range(n)
            ]
            configs = [self.checked_config(overrides) for overrides in combos]
            swept_keys.add("seed")
        params = [run_params(cfg) for cfg in configs]
        self.jobs = [
            Job(
                label=" ".join(o for o in overrides if o.split("=")[0] in swept_keys),
                overrides=overrides,
                key=config_hash(p),
                configuration=configuration(overrides, p, swept_keys) if n > 1 else None,
            )
            for overrides, p in zip(combos, params, strict=True)
        ]
        definition = {"sweeper": "grid", "arguments": arguments, "params": self.params}
        definition["jobs"] = [" ".join(job.overrides) for job in self.jobs]
        return Plan(
            config=configs[0],
            name=self.name or " ".join(swept) or (f"replicates={n}" if n > 1 else "sweep"),
            key=digest(sorted(job.key for job in self.jobs)),
            definition=definition,
            space=dict(line.lstrip("+~").split("=", 1) for line in swept),
            jobs=len(self.jobs),
        )

    def start(self, parent: SweepRun) -> int:
        done = parent.finished_hashes()
        self.todo = [job for job in self.jobs if job.key not in done]
        for num, job in enumerate(self.todo):
            job.label = f"#{num} {job.label}"
        if done:
            log.info(
                f"{len(self.jobs) - len(self.todo)} of {len(self.jobs)} jobs already FINISHED in"
                f" this sweep (parent run {parent.run_id}); running the other {len(self.todo)}"
            )
        self.launched = 0
        return len(self.jobs) - len(self.todo)

    def next_jobs(self) -> list[Job]:
        size = self.max_batch_size or len(self.todo) or 1
        batch = self.todo[self.launched : self.launched + size]
        self.launched += len(batch)
        return batch

    def needs_driver(self) -> str | None:
        if self.max_batch_size and self.max_batch_size < len(self.jobs):
            return f"hydra.sweeper.max_batch_size={self.max_batch_size} launches jobs in batches"
        return None

    def stopped(self, jobs: list[Job], started: int) -> list[str]:
        return [
            f"#{n}: {' '.join(job.overrides)}" for n, job in enumerate(self.todo) if n >= started
        ]


def configuration(overrides: list[str], params: dict, swept_keys: set[str]) -> Configuration:
    """The configuration a replicate belongs to: its swept knobs but the seed."""
    knobs = dict(o.split("=", 1) for o in overrides if o.split("=")[0] in swept_keys - {SEED})
    label = " ".join(f"{k}={v}" for k, v in knobs.items()) or "the configuration"
    return Configuration(group=group_hash(params), label=label, params=knobs)
