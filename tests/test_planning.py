"""Unit tests of how the sweepers plan a sweep before any job runs (sweeping/grid.py,
sweeping/optuna/sweeper.py): the jobs, their seeds and configurations, the sweep's key, and the
refusals. Hydra's own config loader composes each job's config; nothing is launched."""

from __future__ import annotations

import optuna
import pytest
from helpers import ROOT, TINY
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import HydraContext, RunMode

from lstm_mnist.sweeping.grid import GridSweep
from lstm_mnist.sweeping.loop import SweepRejected
from lstm_mnist.sweeping.optuna.sweeper import OptunaSweep, described


def planned(sweeper, arguments: list[str]):
    """`sweeper` set up as Hydra sets it up for `-m *arguments`, and its plan."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        config = loader.load_configuration("config", arguments, run_mode=RunMode.MULTIRUN)
        # planning needs the config loader only; the callbacks are Hydra's run-time business
        context = HydraContext(config_loader=loader, callbacks=None)
        sweeper.setup(hydra_context=context, task_function=lambda cfg: None, config=config)
        return sweeper.plan(arguments)


def test_grid_plan_is_every_combination_with_its_seeds_and_configuration():
    plan = planned(GridSweep(), [*TINY, "num_layers=1,2", "dropout=0,0.5", "replicates=2"])
    sweeper_jobs = plan.definition["jobs"]
    assert len(sweeper_jobs) == 8  # 2 x 2 configurations x 2 seeds
    assert plan.name == "num_layers=1,2 dropout=0,0.5"
    assert plan.space == {"num_layers": "1,2", "dropout": "0,0.5"}
    jobs = [dict(o.split("=", 1) for o in job.split()) for job in sweeper_jobs]
    chosen = [(j["num_layers"], j["dropout"], j["seed"]) for j in jobs]
    assert chosen == [
        (layers, dropout, seed)
        for layers in ("1", "2")
        for dropout in ("0", "0.5")
        for seed in ("42", "43")
    ]


def test_grid_jobs_of_one_configuration_share_its_group_and_differ_in_their_hash():
    sweeper = GridSweep()
    planned(sweeper, [*TINY, "num_layers=1,2", "replicates=3"])
    by_group: dict[str, list] = {}
    for job in sweeper.jobs:
        by_group.setdefault(job.configuration.group, []).append(job)
    assert sorted(len(jobs) for jobs in by_group.values()) == [3, 3]
    assert len({job.key for job in sweeper.jobs}) == 6  # a config hash each
    labels = {job.configuration.label for job in sweeper.jobs}
    assert labels == {"num_layers=1", "num_layers=2"}


def test_the_same_sweep_planned_again_has_the_same_key():
    first = planned(GridSweep(), [*TINY, "num_layers=1,2", "num_units=32"])
    again = planned(GridSweep(), [*TINY, "num_units=32", "num_layers=1,2"])
    other = planned(GridSweep(), [*TINY, "num_layers=1,3", "num_units=32"])
    assert first.key == again.key != other.key


@pytest.mark.parametrize(
    "argument, message",
    [
        ("model.cell=lstm,rnn_tanh", "model.cell=rnn_tanh is invalid: must be lstm or gru"),
        ("data.name=mnist,kmnist", "data.name=kmnist is invalid: must be mnist or fashion_mnist"),
        ("data.device=cpu,tpu", "data.device=tpu is invalid: must be auto, cpu, cuda or cuda:N"),
        ("objective.metric=val_acc,accuracy", "objective.metric=accuracy is invalid: must be a"),
        ("trainer.accelerator=cpu,npu", "trainer.accelerator=npu is invalid: must be cpu, gpu"),
    ],
)
def test_a_knob_outside_its_closed_set_rejects_the_grid_before_any_job(argument, message):
    with pytest.raises(SweepRejected, match=f"sweep rejected before any job ran: {message}"):
        planned(GridSweep(), [*TINY, argument])


def test_replicates_with_a_swept_seed_are_refused():
    with pytest.raises(ValueError, match="replicates=2 and a swept seed: give one or the other"):
        planned(GridSweep(), [*TINY, "seed=1,2", "replicates=2"])


SPACE = {
    "lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
    "num_units": optuna.distributions.CategoricalDistribution([16, 32]),
}


def test_optuna_plan_names_its_study_after_the_space_and_fixed_overrides():
    first = planned(OptunaSweep(params=SPACE, n_trials=3), [*TINY, "dropout=0"])
    more_trials = planned(OptunaSweep(params=SPACE, n_trials=9), [*TINY, "dropout=0"])
    other = planned(OptunaSweep(params=SPACE, n_trials=3), [*TINY, "dropout=0.2"])
    assert first.key == more_trials.key != other.key  # raising n_trials resumes the same study
    assert first.definition["study"] == f"optuna-{first.key}"
    assert first.space == {"lr": "0.0001..0.01 (log)", "num_units": "16,32"}
    assert first.definition["objective"] == "val_acc maximize"


def test_optuna_takes_its_space_from_the_sweeper_not_comma_lists():
    with pytest.raises(ValueError, match="num_layers=1,2: the optuna sweeper takes its search"):
        planned(OptunaSweep(params=SPACE, n_trials=3), [*TINY, "num_layers=1,2"])


def test_a_trade_off_that_is_the_objective_is_refused():
    sweeper = OptunaSweep(params=SPACE, n_trials=3, trade_offs={"val_acc": "minimize"})
    with pytest.raises(ValueError, match="val_acc is the objective already"):
        planned(sweeper, TINY)


def test_search_ranges_read_as_people_write_them():
    assert described(optuna.distributions.IntDistribution(1, 4)) == "1..4"
    assert described(optuna.distributions.IntDistribution(16, 256, step=16)) == "16..256 step 16"
    assert described(optuna.distributions.FloatDistribution(0.0, 0.5)) == "0.0..0.5"
