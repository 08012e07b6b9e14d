"""python src/train.py [KEY=VALUE ...]     (or: lstm-mnist-train)

Train, validate and test one run, or with -m a sweep, as conf/ and the overrides say."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig

from lstm_mnist.cli import ExitCode, fail, quiet, user_errors
from lstm_mnist.cluster import submitit_slurm_job
from lstm_mnist.display import one_line
from lstm_mnist.interrupts import (
    Interrupted,
    in_worker_process,
    interrupts_raised,
    wait_for_the_sweep,
)
from lstm_mnist.resources import CONF_DIR
from lstm_mnist.schema import composition_error, validate

if TYPE_CHECKING:
    from lstm_mnist.job import JobContext

# How the run ended, as plain lines on stdout and in Hydra's train.log (conf/hydra/job_logging).
outcome = logging.getLogger("lstm_mnist.outcome")
jobs_begun = 0  # in this process: its first job's clock starts with the process


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def task(cfg: DictConfig) -> dict[str, Any]:
    """One run (a sweep's job, or the whole command); returns its final metrics, from which the
    sweepers take the objective (and a Pareto sweep its trade-offs)."""
    whole_command = HydraConfig.get().mode == RunMode.RUN  # else a sweep's job
    if whole_command:  # a sweep checked every job before its first one started
        refuse_bad_values(cfg)
    # torch, Lightning, MLflow: not on --help's path, nor on a refused value's
    from lstm_mnist.job import JobContext
    from lstm_mnist.sweeping.optuna.callbacks import trial_callbacks
    from lstm_mnist.training import train

    began = job_began()
    requeue = signal.getsignal(signal.SIGUSR2)  # in a SLURM job: submitit's checkpoint-and-requeue
    # In a parallel sweep's worker process too, for this job only: its run is marked KILLED.
    with interrupts_raised():
        job = JobContext.of_hydra_job(cfg, HydraConfig.get(), os.environ, began)
        try:
            if job.worker and job.slurm is not None and job.slurm.tasks > 1:
                raise ValueError(
                    f"hydra.launcher.tasks_per_node x nodes = {job.slurm.tasks} tasks: an"
                    " asynchronous Optuna worker is one process; use"
                    " hydra.sweeper.asynchronous=false for a sweep of DDP jobs on SLURM"
                )
            if job.worker:  # an asynchronous Optuna worker: many runs, one job
                from lstm_mnist.sweeping.optuna.worker import work

                return ended(job, work(cfg, job))
            if not_started(job):
                return ended(job, {})
            result = train(cfg, job, trial_callbacks(cfg, job))
            if not result:  # rank 1.. of a SLURM job of several tasks: rank 0 has the run
                return {}
        except Interrupted as stop:  # the run is checkpointed and KILLED
            if submitit_slurm_job(os.environ):  # a job of hydra/launcher=slurm
                slurm_stop(stop.signum, requeue)
            if in_worker_process():
                wait_for_the_sweep()
            raise
        except Exception as err:
            outcome.getChild("error").error(f"error: {type(err).__name__}: {one_line(err)}")
            if whole_command:  # else the sweeper records it and goes on
                exit_on(err)  # here, before Hydra prints a line of its own about it
            ended(job, {})
            raise
    ended(job, result)
    outcome.info(
        f"run {result['run_id']}: val_acc={result['val_acc']:.4f} test_acc={result['test_acc']:.4f}"
    )
    if whole_command:  # a sweep ends with its own summary and link
        outcome.info(f"see it: {result['url']}")
    return {k: v for k, v in result.items() if isinstance(v, float)}


def job_began() -> float:
    """When the job began (Unix time): for the process's first, when the process started, so
    that its run's start-up phase counts the interpreter, the imports and the checks."""
    global jobs_begun
    jobs_begun += 1
    if jobs_begun > 1:
        return time.time()
    from lstm_mnist.phases import process_start

    return process_start()


def refuse_bad_values(cfg: DictConfig) -> None:
    """Exit FAILED on a value no run can use, or a store it cannot use (Store.check: a tracking
    or database server that does not answer, or is not MLflow's), before torch and Lightning are
    imported (about 9 s here): train() and the store's prepare() make the same checks for a
    caller that is not this command."""
    try:
        validate(cfg)  # before MLflow's import too: a wrong value answers in about 3 s
    except ValueError as err:
        refuse(err)
    from lstm_mnist.tracking.store import Store, StoreError

    try:
        Store.of(cfg).check()
    except StoreError as err:
        refuse(err)


def refuse(err: Exception) -> NoReturn:
    """Exit FAILED, in one line, before any run is recorded."""
    outcome.getChild("error").error(f"error: {type(err).__name__}: {one_line(err)}")
    fail(err)


def not_started(job: JobContext) -> bool:
    """Whether this job of a sweep is not to train: its sweep's budget is spent. (An Optuna
    trial's job was asked for by a driver that checked; a worker checks before each trial.)"""
    place = job.sweep
    if place is None or place.budget is None or job.trial is not None or not job.rank_0:
        return False
    if (reason := place.budget.spent(job.sweep_run())) is None:
        return False
    outcome.info(f"not started: the sweep's budget hydra.sweeper.{reason} is spent")
    return True


def ended(job: JobContext, result: dict[str, Any]) -> dict[str, Any]:
    """A job of a detached sweep has ended: the last one closes the sweep."""
    if job.sweep is not None and job.sweep.detached and job.rank_0:
        from lstm_mnist.sweeping.detached import job_ended

        if job_ended(job):
            outcome.info(
                f"this job was the sweep's last: it closed parent run {job.sweep.parent_run}"
            )
    return result


def slurm_stop(signum: int, requeue: Any) -> None:
    """End a SLURM job whose run was interrupted and checkpointed. Time nearly up (submitit's
    SIGUSR2): submitit requeues the job, which then continues the same run (tracked_run), or
    says it is out of requeues. SIGTERM (cancelled, preempted or requeued by SLURM): exit
    without a result, so that submitit reports the job's state, or the requeued job's result."""
    if signum == signal.SIGUSR2 and callable(requeue):
        requeue(signum, None)  # exits, or raises submitit's UncompletedJobError
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


def main() -> None:
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra raises instead of printing: we print
    quiet()
    try:
        with interrupts_raised():
            task()
    except (ConfigCompositionException, OverrideParseException) as err:
        fail(composition_error(err))
    except Interrupted as stop:  # ends a sweep too: its remaining jobs do not start
        print(f"interrupted by {stop}: the run is marked KILLED", file=sys.stderr)
        sys.exit(ExitCode(128 + stop.signum))
    except Exception as err:
        exit_on(err)


def exit_on(err: Exception) -> None:
    """Exit FAILED with the error's one line, or a failed sweep's line per job; raise a bug."""
    from lstm_mnist.sweeping.loop import JobsFailed

    if isinstance(err, JobsFailed):
        print(err, file=sys.stderr)
        sys.exit(ExitCode.FAILED)
    if isinstance(err, user_errors()):
        fail(err)
    raise err
