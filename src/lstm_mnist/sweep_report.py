"""A sweep's answer in one self-contained HTML file a colleague can open: the command, the runs
and configurations tables (intervals and marks), the Pareto set, the plots embedded, the compute
used, the versions and the machine. Written when a sweep closes and by `compare.py --report`;
logged on the parent run (the MLflow UI's artifact view shows it) and written beside the sweep's
outputs."""

from __future__ import annotations

import base64
import io
import os
import platform
import socket
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from jinja2 import Environment, PackageLoader
from matplotlib.figure import Figure
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from lstm_mnist import comparison, pareto
from lstm_mnist.tracking import SweepRecord, names
from lstm_mnist.tracking.compute import Compute

REPORT = "report.html"  # its name, in the sweep's folder and among the parent's artifacts
PACKAGES = ("torch", "pytorch-lightning", "hydra-core", "mlflow", "optuna", "lstm-mnist")


def figures(
    sweep: SweepRecord,
    parent: Run,
    runs: list[Run],
    storage: str | None = None,
    importance: str = "ped-anova",
) -> tuple[dict[str, Figure], str | None]:
    """The sweep's plots by file name (learning curves, the objective against each swept knob,
    the Pareto front, Optuna's parameter importance), and why the importance plot is missing
    when its study cannot be found."""
    swept = comparison.swept_params(runs)
    found = {"learning_curves.png": comparison.plot_curves(sweep, runs, swept)}
    if swept:
        found["params.png"] = comparison.plot_params(sweep, runs, swept)
    if sweep.trade_offs:
        knobs = [k for k in swept if k != names.SEED]
        found["pareto_front.png"] = pareto.plot(sweep, runs, knobs)
    try:
        plot = comparison.plot_importance(parent, sweep.store, storage, importance)
    except ValueError as err:  # the study's storage is not known
        return found, str(err)
    if plot is not None:
        found["param_importance.png"] = plot
    return found, None


def tables(sweep: SweepRecord, runs: list[Run]) -> list[dict[str, Any]]:
    """The tables compare.py prints, as head and rows."""
    swept = comparison.swept_params(runs)
    head, rows = comparison.run_rows(runs, swept, tuple(t.metric for t in sweep.trade_offs))
    found = [
        {
            "title": f"Runs, best first by {sweep.objective.metric} ({len(runs)})",
            "head": head,
            "rows": rows,
            "text": {"run", "status"},
            "first_is_best": True,
        }
    ]
    if (configurations := comparison.configuration_rows(sweep, runs, swept)) is not None:
        head, rows = configurations
        found.append(
            {
                "title": "Configurations, best mean first",
                "note": "mean ± sample std over seeds; 95% CI of the mean (Student's t); vs"
                " best: Welch's t-test, ≈ best when p >= 0.05",
                "head": head,
                "rows": rows,
                "text": {"vs best"},
                "first_is_best": True,
            }
        )
    if sweep.trade_offs:
        knobs = [k for k in swept if k != names.SEED]
        head, rows = pareto.rows(sweep, runs, knobs)
        objectives = ", ".join(f"{o.metric} ({o.direction})" for o in sweep.objectives)
        found.append(
            {
                "title": "Pareto set",
                "note": f"the configurations no other beats on all of {objectives}",
                "head": head,
                "rows": rows,
                "text": set(),
            }
        )
    return found


def render(
    sweep: SweepRecord,
    parent: Run,
    runs: list[Run],
    plots: dict[str, Figure],
    summary: list[str] | None = None,
) -> str:
    """The report's HTML, every picture in it (a data: URL), nothing linked."""
    tags, metrics, info = parent.data.tags, parent.data.metrics, parent.info
    used = Compute(*(metrics.get(f"compute_{m}", 0.0) for m in names.COMPUTE))
    compute = {f"compute_{m}": f"{getattr(used, m):.1f}" for m in names.COMPUTE}
    compute["in all"] = str(used)
    template = Environment(
        loader=PackageLoader("lstm_mnist", "templates"), autoescape=True
    ).get_template("sweep_report.html.j2")
    return template.render(
        name=tags.get(names.SWEEP_NAME, info.run_name),
        run_id=info.run_id,
        experiment=sweep.store.experiment_name,
        store=sweep.store.shown_uri,
        status=info.status,
        started=moment(info.start_time),
        ended=moment(info.end_time) if info.end_time else None,
        command=tags.get(names.SWEEP_COMMAND),
        summary=summary,
        tables=tables(sweep, runs),
        figures={name: png(fig) for name, fig in plots.items()},
        compute=compute,
        driver=tags.get(names.DRIVER, "").split(" ")[0] or None,
        environment=environment(),
        made=moment(None),
    )


def write(
    sweep: SweepRecord,
    parent: Run,
    runs: list[Run],
    plots: dict[str, Figure],
    summary: list[str] | None = None,
    out: Path | None = None,
) -> list[Path]:
    """Write the report to `out` (a folder) and to the sweep's output folder where it is on this
    machine, and log it on the parent run as report.html; return the files written."""
    html = render(sweep, parent, runs, plots, summary)
    sweep.store.client.log_text(parent.info.run_id, html, REPORT)
    folders = [out] if out is not None else []
    if (sweep_dir := parent.data.tags.get(names.SWEEP_DIR)) and Path(sweep_dir).is_dir():
        folders.append(Path(sweep_dir))
    written = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / REPORT).write_text(html, encoding="utf-8")
        written.append(folder / REPORT)
    return written


def report_on_close(sweep: SweepRecord, parent: Run, summary: list[str]) -> list[Path]:
    """The report of a sweep that has just closed (`parent`: its parent run as closed), with its
    summary lines."""
    runs = comparison.ranked(sweep.objective, sweep.children())
    plots, _ = figures(sweep, parent, runs)
    try:
        return write(sweep, parent, runs, plots, summary)
    finally:
        for fig in plots.values():
            plt.close(fig)


def recorded_summary(sweep: SweepRecord) -> list[str] | None:
    """The lines the sweep ended with (its parent's summary.txt); None before it has ended."""
    try:
        path = sweep.store.client.download_artifacts(sweep.run_id, names.SUMMARY)
    except (MlflowException, OSError):
        return None
    return Path(path).read_text(encoding="utf-8").splitlines()


def png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def moment(ms: int | None) -> str:
    """A time in milliseconds since the epoch (None: now), as UTC."""
    utc = timezone.utc
    at = datetime.now(utc) if ms is None else datetime.fromtimestamp(ms / 1000, tz=utc)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def environment() -> dict[str, str]:
    """The versions and the machine the report was made with."""
    found = {"python": sys.version.split()[0]}
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    found["machine"] = f"{socket.gethostname()}: {platform.platform()}"
    found["processor"] = platform.processor() or platform.machine()
    found["cores"] = str(os.cpu_count())
    return found
