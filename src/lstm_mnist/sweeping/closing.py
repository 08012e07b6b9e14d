"""How a sweep ends, written once: its parent closed with its jobs' counts, best, Pareto set and
compute, the model policy applied, the summary lines printed and stored on the parent as
summary.txt, and its report (sweep_report.py). An attached sweep's driver calls it; a detached
sweep's last job to end (detached.py); `sweeps stop` and `sweeps finish` (control.py)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from urllib.parse import urlsplit

from mlflow.entities import Run

from lstm_mnist.display import one_line
from lstm_mnist.stats import estimate
from lstm_mnist.sweeping.model_policy import keep_best_models
from lstm_mnist.tracking import DEFAULT_URI, JOB_STATES, Outcome, Store, SweepRun, names

log = logging.getLogger(__name__)


def finish_sweep(parent: SweepRun, status: str | None = None, done_before: int = 0) -> list[str]:
    """Close the parent (`status`: see SweepRun.close) and return the sweep's summary lines;
    `done_before`: jobs that FINISHED in an earlier start of it and were not run again."""
    outcome = parent.close(status)
    run = parent.store.client.get_run(parent.run_id)
    mode, _, keep = run.data.tags.get(names.MODEL_POLICY, "true 1").partition(" ")
    if mode == "best":
        kept, deleted = keep_best_models(parent, int(keep))
        log.info(f"artifacts.model=best: kept {kept} logged model(s), deleted {deleted}")
    lines = summary(run, parent, outcome, done_before)
    parent.store.client.log_text(parent.run_id, "\n".join(lines) + "\n", names.SUMMARY)
    try:
        from lstm_mnist.sweep_report import report_on_close  # matplotlib's import: here only

        written = report_on_close(parent, run, lines)
    except Exception as err:  # noqa: BLE001 (the sweep is closed and its summary kept: a report
        # that cannot be drawn must not turn that into a failure; compare --report redoes it)
        log.warning(f"no sweep report: {type(err).__name__}: {one_line(err)}")
    else:
        where = ", ".join(map(str, written)) or "no folder of it here"
        lines.insert(-1, f"report: {where} (and report.html in the parent run)")  # before next:
    return lines


def summary(run: Run, parent: SweepRun, outcome: Outcome, done_before: int = 0) -> list[str]:
    """The lines a sweep ends with (`run`: its parent run, closed): how its jobs ended, what
    they cost, the best configuration, where to look, what to run next."""
    name, space = run.data.tags.get(names.SWEEP_NAME, run.info.run_name), run.data.params
    counts = outcome.counts
    shown = {**{s: s for s in (*JOB_STATES[1:], "skipped")}, "unstarted": "never started"}
    states = "".join(f", {counts[s]} {text}" for s, text in shown.items() if counts[s])
    before = f" ({done_before} of them before: not run again)" if done_before else ""
    total = sum(counts.values())
    lines = [f"sweep {name}: {counts['finished']} of {total} jobs finished{before}{states}"]
    if reason := run.data.tags.get(names.STOPPED_BY):
        lines[0] += f"; stopped by {'sweeps stop' if reason == 'stop' else reason}"
    lines[0] += f"; compute {outcome.cost}"
    metric = parent.objective.metric
    if outcome.best is not None:
        given = outcome.best.data.tags.get(names.OVERRIDES, "").split()
        config = [o for o in given if o.split("=")[0].lstrip("+") in space]
        found = estimate([r.data.metrics[metric] for r in outcome.group])
        best = f"run {outcome.best.info.run_id}"
        if found.n > 1:
            best = f"over {found.n} seeds, 95% CI {found.interval}; best seed: {best}"
        # with nothing swept but the seed, there is one configuration to speak of
        unnamed = "the configuration" if found.n > 1 else outcome.best.info.run_name
        shown = " ".join(config) or unnamed
        lines.append(f"best: {shown} {metric}={found} ({best})")
    lines.append(f"runs: {parent.store.where_to_look(parent.url())}")
    if (counts["unstarted"] or counts["killed"]) and (
        again := run.data.tags.get(names.SWEEP_COMMAND)
    ):
        lines.append(f"resume: {again}   (runs what did not finish; the rest is kept)")
    lines.append(f"next: {command('compare', parent.store, '--sweep', parent.run_id)}")
    return lines


def command(name: str, store: Store, *words: str) -> str:
    """The command `name` (compare, sweeps) with `words`, as this one was run (a checkout's
    script, or the console script), for this store."""
    script = Path(sys.argv[0])
    checkout = script.name in ("train.py", "sweeps.py", "compare.py")  # else a console script's
    text = f"python {script.with_name(f'{name}.py')}" if checkout else f"lstm-mnist-{name}"
    text = " ".join([text, *words])
    if store.uri != DEFAULT_URI:  # MLflow sets MLFLOW_TRACKING_URI itself: say it
        secret = urlsplit(store.uri).password
        text += f" --tracking-uri {'$MLFLOW_TRACKING_URI' if secret else store.uri}"
    if store.experiment_name != "lstm-mnist":
        text += f" --experiment {store.experiment_name}"
    return text
