"""Sweeps from the command line, into a real SQLite MLflow store and Optuna study."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import markupsafe
import mlflow
import optuna
import pytest
import scipy.stats
from helpers import ASYNC_SEARCH, ROOT, assert_no_barrier, run_cli, runs_in, steps_of, tiny_cli_args

from lstm_mnist.cli import compare_command
from lstm_mnist.tracking import Objective, Store

pytestmark = pytest.mark.slow


def html_text(text: str) -> str:
    """`text` as the report's template (Jinja2, autoescaped) writes it."""
    return str(markupsafe.escape(text))


def sweep_args(tmp_path, *drop: str) -> list[str]:
    """tiny_cli_args without the overrides that start with `drop` (the swept knobs)."""
    return [a for a in tiny_cli_args(tmp_path) if not a.startswith(drop)]


def run_sweep(tmp_path, *overrides: str, drop: tuple[str, ...] = ()):
    return run_cli(tmp_path, *overrides, multirun=True, replace=sweep_args(tmp_path, *drop))


def test_layers_sweep_nests_its_runs_under_one_parent_and_resumes(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_sweep(tmp_path, "sweeps=layers", drop=("num_layers",))
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = runs_in(store)
    (parent,) = runs_in(store, parents=True)
    assert sorted(r.data.params["num_layers"] for r in runs) == ["1", "2", "3"]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert parent.info.run_name == "layers" and parent.info.status == "FINISHED"
    assert int(parent.data.tags["jobs_finished"]) == 3
    assert int(parent.data.tags["jobs_failed"]) == int(parent.data.tags["jobs_pruned"]) == 0
    best = max(runs, key=lambda r: r.data.metrics["val_acc"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.metrics["best_val_acc"] == best.data.metrics["val_acc"]
    client = mlflow.MlflowClient(store)
    definition = open(client.download_artifacts(parent.info.run_id, "sweep.yaml")).read()
    assert "num_layers: 1,2,3" in definition
    assert parent.data.params == {"num_layers": "1,2,3"}  # the swept space
    assert not any(key.startswith("jobs_") for key in parent.data.metrics)  # tags, not charts

    # The sweep ends with its answer, where to see it and what to run next.
    summary = proc.stdout.splitlines()[-5:]
    # What it cost: each run's wall time x its cores, summed on the parent and in the summary.
    for run in runs:
        wall, threads = run.data.metrics["wall_s"], int(run.data.tags["torch_threads"])
        assert 0 < wall < 120 and run.data.metrics["core_s"] == pytest.approx(wall * threads)
        assert run.data.metrics["gpu_s"] == 0
    used = sum(r.data.metrics["core_s"] for r in runs)
    assert parent.data.metrics["compute_core_s"] == pytest.approx(used)
    assert summary[0] == f"sweep layers: 3 of 3 jobs finished; compute {used:.0f} core-s"
    num_layers, val_acc = best.data.params["num_layers"], best.data.metrics["val_acc"]
    assert (
        summary[1]
        == f"best: num_layers={num_layers} val_acc={val_acc:.4f} (run {best.info.run_id})"
    )
    experiment = parent.info.experiment_id
    assert summary[2] == (
        f"runs: http://127.0.0.1:5000/#/experiments/{experiment}?workflowType=machine_learning"
        f"  (start the UI first: mlflow ui --backend-store-uri {store})"
    )
    report = Path(parent.data.tags["sweep_id"]) / "report.html"
    assert summary[3] == f"report: {report} (and report.html in the parent run)"
    compare_py = ROOT / "src" / "compare.py"
    assert (
        summary[4]
        == f"next: python {compare_py} --sweep {parent.info.run_id} --tracking-uri {store}"
    )
    # The report a colleague can open: one file, the same as the parent's artifact, holding the
    # command, the summary, every run's numbers and the plots themselves.
    page = report.read_text()
    assert page == open(client.download_artifacts(parent.info.run_id, "report.html")).read()
    assert html_text(parent.data.tags["sweep_command"]) in page and "sweeps=layers" in page
    assert html_text(summary[0]) in page and html_text(summary[1]) in page
    for run in runs:
        row = f'<td class="text">{run.info.run_id}</td><td class="text">finished</td>'
        assert row + f"<td>{run.data.metrics['val_acc']:.4f}</td>" in page
        assert f"<td>{run.data.metrics['test_acc']:.4f}</td>" in page
    assert page.count('src="data:image/png;base64,') == 2  # curves and num_layers, embedded
    assert f"<td>{parent.data.metrics['compute_core_s']:.1f}</td>" in page

    again = run_sweep(tmp_path, "sweeps=layers", drop=("num_layers",))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "3 of 3 jobs already FINISHED" in again.stdout
    assert "sweep layers: 3 of 3 jobs finished (3 of them before: not run again);" in again.stdout
    assert len(runs_in(store)) == 3 and len(runs_in(store, parents=True)) == 1

    deleted = next(r for r in runs if r.data.params["num_layers"] == "2")
    client.delete_run(deleted.info.run_id)
    third = run_sweep(tmp_path, "sweeps=layers", drop=("num_layers",))
    assert third.returncode == 0, third.stderr[-3000:]
    assert "2 of 3 jobs already FINISHED" in third.stdout
    (new,) = [r for r in runs_in(store) if r.info.run_id not in {r.info.run_id for r in runs}]
    assert new.data.params["num_layers"] == "2" and new.info.status == "FINISHED"
    assert new.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert len(runs_in(store, parents=True)) == 1


def test_failed_job_is_recorded_and_the_others_still_run(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_sweep(tmp_path, "num_units=16,2000000,32")  # job 2 needs 64 TB: out of memory
    assert proc.returncode == 1
    assert "sweep done; 1 of 3 job(s) failed:" in proc.stderr
    assert "#1 num_units=2000000" in proc.stderr and "can't allocate memory" in proc.stderr
    runs = runs_in(store)
    status = {r.data.params["num_units"]: r.info.status for r in runs}
    assert status == {"16": "FINISHED", "2000000": "FAILED", "32": "FINISHED"}
    failed = next(r for r in runs if r.info.status == "FAILED")
    assert "can't allocate memory" in failed.data.tags["error"]
    (parent,) = runs_in(store, parents=True)
    assert parent.info.status == "FAILED"
    assert int(parent.data.tags["jobs_finished"]) == 2 and int(parent.data.tags["jobs_failed"]) == 1
    assert "sweep num_units=16,2000000,32: 2 of 3 jobs finished, 1 failed" in proc.stdout


def test_optuna_sweep_prunes_resumes_and_compares(tmp_path, capsys):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    search = [
        "sweeps=optuna",
        "~hydra.sweeper.params.num_units",  # keep the tiny model: search lr and dropout only
        "~hydra.sweeper.params.num_layers",
        "hydra.sweeper.pruner.n_startup_trials=1",
        # the second cannot learn; the third waits for the resumed sweep
        "hydra.sweeper.enqueue=[{lr:1.0e-2},{lr:1.0e-7},{lr:3.0e-3,dropout:0.0}]",
    ]
    proc = run_sweep(tmp_path, *search, "hydra.sweeper.n_trials=2", drop=("lr",))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (parent,) = runs_in(store, parents=True)
    study = optuna.load_study(
        study_name=parent.data.tags["optuna_study"], storage=f"sqlite:///{tmp_path}/optuna.db"
    )
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "PRUNED", "WAITING"]
    assert study.trials[1].params["lr"] == 1.0e-7
    assert list(study.trials[1].intermediate_values) == [20]  # stopped at its first validation
    runs = {r.data.tags["optuna_trial"]: r for r in runs_in(store)}
    assert (
        runs["1"].info.status == "FINISHED" and "pruned at step 20" in runs["1"].data.tags["pruned"]
    )
    assert steps_of(store, runs["1"], "val_acc") == [20]
    assert "pruned" not in runs["0"].data.tags and steps_of(store, runs["0"], "val_acc") == [20, 30]
    assert int(parent.data.tags["jobs_pruned"]) == 1 and int(parent.data.tags["jobs_finished"]) == 1
    assert parent.data.tags["best_run_id"] == runs["0"].info.run_id
    assert parent.data.params["lr"] == "0.0001..0.01 (log)"  # the search space (sweeps/optuna.yaml)
    assert "sweep optuna: 1 of 2 jobs finished, 1 pruned" in proc.stdout
    (best_line,) = [line for line in proc.stdout.splitlines() if line.startswith("best: ")]
    assert (
        "lr=0.01 " in best_line and f"val_acc={runs['0'].data.metrics['val_acc']:.4f}" in best_line
    )

    # Resumed with a larger budget: one more trial (the third enqueued one), in the same study.
    resume = ["hydra.sweeper.n_trials=3", "hydra.sweeper.pruner.n_warmup_steps=30"]
    more = run_sweep(tmp_path, *search, *resume, drop=("lr",))
    assert more.returncode == 0, more.stderr[-3000:]
    assert "2 trials already finished; resuming" in more.stdout
    study = optuna.load_study(
        study_name=study.study_name, storage=f"sqlite:///{tmp_path}/optuna.db"
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert study.trials[2].params == {"lr": 3.0e-3, "dropout": 0.0}
    assert len(runs_in(store)) == 3 and len(runs_in(store, parents=True)) == 1

    compare_command.main(["--tracking-uri", store, "--out", str(tmp_path / "compare")])
    printed = capsys.readouterr().out.splitlines()
    best = max(runs_in(store), key=lambda r: r.data.metrics["val_acc"])
    header = printed[1].split()
    assert header[:5] == ["#", "run", "status", "val_acc", "test_acc"]
    assert {"lr", "dropout"} <= set(header)
    assert printed[2].split()[:3] == ["1", best.info.run_id, "finished"]
    assert printed[4].split()[2] == "pruned"  # no final val_acc: last
    pngs = ["learning_curves.png", "params.png", "param_importance.png"]
    assert all((tmp_path / "compare" / name).stat().st_size > 10_000 for name in pngs)
    logged = mlflow.MlflowClient(store).list_artifacts(parent.info.run_id, "compare")
    assert sorted(f.path for f in logged) == sorted(f"compare/{name}" for name in pngs)

    # The live view: optuna-dashboard on the study's database, read back over HTTP.
    study_view = dashboard(f"sqlite:///{tmp_path}/optuna.db", tmp_path)
    (summary,) = study_view["study_summaries"]
    assert summary["study_name"] == study.study_name
    assert summary["directions"] == ["maximize"]


def dashboard(storage: str, tmp_path) -> dict:
    """Start optuna-dashboard on 127.0.0.1, return its list of studies, stop it by its PID."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [os.path.join(os.path.dirname(sys.executable), "optuna-dashboard"), storage]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--server", "wsgiref"],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "dashboard.log", "w"),
    )
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as response:
                    return json.load(response)
            except OSError:
                time.sleep(0.5)
        raise AssertionError(
            "optuna-dashboard did not answer: " + (tmp_path / "dashboard.log").read_text()
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_parallel_jobs_share_the_cores(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_sweep(tmp_path, "num_layers=1,2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = runs_in(store)
    assert sorted(r.data.params["num_layers"] for r in runs) == ["1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert {r.data.tags["torch_threads"] for r in runs} == {str(threads)}
    (parent,) = runs_in(store, parents=True)
    assert int(parent.data.tags["jobs_finished"]) == 2


def by_hand(values: list[float]) -> tuple[float, float, float, float]:
    """Mean, sample std and the Student's t 95% interval, computed here from the formulas."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = scipy.stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def welch_by_hand(a: list[float], b: list[float]) -> float:
    va, vb = (by_hand(x)[1] ** 2 / len(x) for x in (a, b))
    t = (by_hand(a)[0] - by_hand(b)[0]) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return 2 * scipy.stats.t.sf(abs(t), df)


def test_replicates_rank_configurations_by_their_mean_with_intervals(tmp_path, capsys):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_sweep(tmp_path, "num_units=8,16", "replicates=3", drop=("num_units",))
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = runs_in(store)
    seeds = sorted((int(r.data.params["num_units"]), int(r.data.params["seed"])) for r in runs)
    assert seeds == [(u, s) for u in (8, 16) for s in (42, 43, 44)]
    assert len({r.data.tags["config_group"] for r in runs}) == 2  # MLflow's UI groups by it
    val = {
        u: [r.data.metrics["val_acc"] for r in runs if r.data.params["num_units"] == str(u)]
        for u in (8, 16)
    }
    best, other = sorted(val, key=lambda u: by_hand(val[u])[0], reverse=True)
    mean, std, low, high = by_hand(val[best])

    (parent,) = runs_in(store, parents=True)
    assert parent.data.metrics["best_val_acc"] == pytest.approx(mean)
    assert parent.data.metrics["best_val_acc_std"] == pytest.approx(std)
    assert parent.data.metrics["best_n"] == 3
    best_seed = max(
        (r for r in runs if r.data.params["num_units"] == str(best)),
        key=lambda r: r.data.metrics["val_acc"],
    )
    assert parent.data.tags["best_run_id"] == best_seed.info.run_id
    assert (
        f"best: num_units={best} val_acc={mean:.4f} ± {std:.4f} (over 3 seeds, 95% CI"
        f" [{low:.4f}, {high:.4f}]; best seed: run {best_seed.info.run_id})"
    ) in proc.stdout

    # Each configuration has a run, nested under the parent, with its seeds nested under it and
    # the mean, std and n of their metrics.
    groups = runs_in(store, configurations=True)
    assert sorted(g.info.run_name for g in groups) == ["num_units=16", "num_units=8"]
    for group in groups:
        assert group.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert group.info.status == "FINISHED"
        units = group.data.params["num_units"]
        seeds = [r for r in runs if r.data.tags["mlflow.parentRunId"] == group.info.run_id]
        assert sorted(r.data.params["seed"] for r in seeds) == ["42", "43", "44"]
        assert {r.data.params["num_units"] for r in seeds} == {units}
        g_mean, g_std, _, _ = by_hand(val[int(units)])
        assert group.data.metrics["val_acc_mean"] == pytest.approx(g_mean)
        assert group.data.metrics["val_acc_std"] == pytest.approx(g_std)
        assert group.data.metrics["val_acc_n"] == 3
        tests = [r.data.metrics["test_acc"] for r in seeds]
        assert group.data.metrics["test_acc_mean"] == pytest.approx(by_hand(tests)[0])

    compare_command.main(["--tracking-uri", store, "--out", str(tmp_path / "compare")])
    printed = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(printed) if line.startswith("configurations"))
    header, first, second = (line.split("  ") for line in printed[start + 1 : start + 4])
    cells = [[c.strip() for c in row if c.strip()] for row in (first, second)]
    assert cells[0][:5] == [
        "1",
        str(best),
        "3",
        f"{mean:.4f} ± {std:.4f}",
        f"[{low:.4f}, {high:.4f}]",
    ]
    assert cells[0][-1] == "best"
    o_mean, o_std, o_low, o_high = by_hand(val[other])
    assert cells[1][:5] == [
        "2",
        str(other),
        "3",
        f"{o_mean:.4f} ± {o_std:.4f}",
        f"[{o_low:.4f}, {o_high:.4f}]",
    ]
    p = welch_by_hand(val[best], val[other])
    assert cells[1][-1] == f"{'≈ best' if p >= 0.05 else 'worse'} (p={p:.3f})"
    assert (tmp_path / "compare" / "learning_curves.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["num_layers=1,2", "seed=1,2", "replicates=2"], "replicates=2 and a swept seed"),
        (
            ["sweeps=pareto", "hydra.sweeper.trade_offs.num_params=smallest"],
            "num_params: smallest: a direction is one of maximize, minimize",
        ),
    ],
)
def test_replicates_that_cannot_work_are_refused_before_any_run(tmp_path, overrides, message):
    proc = run_sweep(tmp_path, *overrides, drop=("num_layers", "seed"))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
    assert not (tmp_path / "mlflow.db").exists() or runs_in(f"sqlite:///{tmp_path}/mlflow.db") == []


def test_model_policy_best_keeps_only_the_best_configurations_models(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_sweep(
        tmp_path, "num_units=8,16,24", "artifacts.model=best", drop=("num_units", "artifacts.model")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = runs_in(store)
    best = max(runs, key=lambda r: r.data.metrics["val_acc"])
    client = mlflow.MlflowClient(store)
    experiment = best.info.experiment_id
    left = client.search_logged_models([experiment])
    assert [m.source_run_id for m in left] == [best.info.run_id]
    # The others' files are gone from disk (MLflow's gc), the best one's are there.
    files = [f for f in (tmp_path / "mlruns" / "models").rglob("*") if f.is_file()]
    assert files and {f.relative_to(tmp_path / "mlruns" / "models").parts[0] for f in files} == {
        left[0].model_id
    }
    (parent,) = runs_in(store, parents=True)
    assert parent.data.tags["models_kept"] == "1 of 3"
    assert Store(store, "lstm-mnist").best_model(Objective.default()).model_id == left[0].model_id


def test_optuna_trial_is_the_mean_of_its_replicates_and_prunes_on_their_reports(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    search = [
        "sweeps=optuna",
        "~hydra.sweeper.params.num_units",
        "~hydra.sweeper.params.num_layers",
        "~hydra.sweeper.params.dropout",
        "replicates=2",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.enqueue=[{lr:3.0e-3},{lr:1.0e-2},{lr:1.0e-7}]",  # the third cannot learn
    ]
    proc = run_sweep(tmp_path, *search, drop=("lr",))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (parent,) = runs_in(store, parents=True)
    study = optuna.load_study(
        study_name=parent.data.tags["optuna_study"], storage=f"sqlite:///{tmp_path}/optuna.db"
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    runs = runs_in(store)
    of_trial = {n: [r for r in runs if r.data.tags["optuna_trial"] == str(n)] for n in range(3)}
    for n in (0, 1):  # a trial's value is the mean of its seeds' val_acc
        seeds = of_trial[n]
        assert sorted(r.data.params["seed"] for r in seeds) == ["42", "43"]
        values = [r.data.metrics["val_acc"] for r in seeds]
        assert study.trials[n].value == pytest.approx(sum(values) / 2)
        assert study.trials[n].user_attrs["val_acc_std"] == pytest.approx(by_hand(values)[1])
        # replicate 1 reports after replicate 0 on the trial's step axis (max_steps=30)
        assert sorted(study.trials[n].intermediate_values) == [20, 50]  # (fit validates at 20)
    # The hopeless trial: pruned at its first seed's first validation; its second seed stops
    # at its own first validation, without reporting.
    assert list(study.trials[2].intermediate_values) == [20]
    pruned = sorted(of_trial[2], key=lambda r: r.data.params["seed"])
    assert all(r.info.status == "FINISHED" for r in pruned)
    assert pruned[0].data.tags["pruned"].startswith("pruned at step 20")
    assert "as another seed was pruned at step 20" in pruned[1].data.tags["pruned"]
    # One configuration run per trial, the trial's seeds nested under it.
    groups = {g.info.run_id: g for g in runs_in(store, configurations=True)}
    assert len(groups) == 3
    for n, seeds in of_trial.items():
        (group_id,) = {r.data.tags["mlflow.parentRunId"] for r in seeds}
        assert groups[group_id].info.run_name.startswith(f"trial {n} lr=")
        assert groups[group_id].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert int(parent.data.tags["jobs_finished"]) == 4 and int(parent.data.tags["jobs_pruned"]) == 2


def test_pareto_sweep_records_its_front(tmp_path, capsys):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    search = [
        "sweeps=pareto",
        "~hydra.sweeper.params.lr",
        "hydra.sweeper.params.num_layers.high=2",
        "hydra.sweeper.params.num_units.choices=[8,16,32]",
        "hydra.sweeper.n_trials=4",
    ]
    proc = run_sweep(tmp_path, *search, drop=("num_units", "num_layers"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = runs_in(store)
    assert len(runs) == 4
    for run in runs:  # what a model costs, measured on every run
        units, layers = int(run.data.params["num_units"]), int(run.data.params["num_layers"])
        lstm = sum(4 * units * ((28 if i == 0 else units) + units + 2) for i in range(layers))
        assert run.data.metrics["num_params"] == lstm + 10 * units + 10
        assert 0 < run.data.metrics["latency_ms"] < 1000
    (parent,) = runs_in(store, parents=True)
    study = optuna.load_study(
        study_name=parent.data.tags["optuna_study"], storage=f"sqlite:///{tmp_path}/optuna.db"
    )
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    by_trial = {r.data.tags["optuna_trial"]: r for r in runs}
    keys = ("val_acc", "num_params", "latency_ms")
    for trial in study.trials:
        assert trial.values == [by_trial[str(trial.number)].data.metrics[k] for k in keys]

    # The Pareto set, by hand: the configurations (runs of equal knobs averaged) that no other is
    # at least as good as on all three objectives and better on one.
    configurations: dict[tuple, list] = {}
    for run in runs:
        knobs = (run.data.params["num_units"], run.data.params["num_layers"])
        configurations.setdefault(knobs, []).append(run)

    def point(group):
        mean = {k: sum(r.data.metrics[k] for r in group) / len(group) for k in keys}
        return (mean["val_acc"], -mean["num_params"], -mean["latency_ms"])

    def beats(a, b):
        return all(x >= y for x, y in zip(a, b, strict=True)) and a != b

    points = {knobs: point(group) for knobs, group in configurations.items()}
    front = {
        r.info.run_id
        for knobs, group in configurations.items()
        if not any(beats(p, points[knobs]) for p in points.values())
        for r in group
    }
    assert set(parent.data.tags["pareto_set"].split()) == front
    if len(configurations) == len(runs):  # Optuna's own front, of trials, is the same then
        assert {t.number for t in study.best_trials} == {
            int(r.data.tags["optuna_trial"]) for r in runs if r.info.run_id in front
        }
    client = mlflow.MlflowClient(store)
    members = json.load(open(client.download_artifacts(parent.info.run_id, "pareto_set.json")))
    assert {run_id for m in members for run_id in m["runs"]} == front

    # the report on demand, made anew: the sweep's own plus the Pareto set and its front
    out = tmp_path / "compare"
    capsys.readouterr()
    compare_command.main(["--tracking-uri", store, "--out", str(out), "--report"])
    printed = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(printed) if line.startswith("Pareto set"))
    assert printed[start + 1].split()[-3:] == ["val_acc", "num_params", "latency_ms"]
    assert len(printed[start + 2 :]) >= len(front)
    assert (out / "pareto_front.png").stat().st_size > 10_000
    report = Path(parent.data.tags["sweep_id"]) / "report.html"
    written = f"{out / 'report.html'}, {report}"
    assert printed[-1] == f"report: {written} (and report.html in the parent run)"
    page = (out / "report.html").read_text()
    assert page == report.read_text()
    assert page == open(client.download_artifacts(parent.info.run_id, "report.html")).read()
    assert "<h2>Pareto set</h2>" in page and html_text(parent.data.tags["sweep_command"]) in page
    for member in members:  # each configuration of the set: its seeds and mean num_params
        assert f"<td>{len(member['runs'])}</td><td>{member['val_acc']:.4g}</td>" in page
        assert f"<td>{member['num_params']:,.0f}</td>" in page
    for run in runs:
        assert f"<td>{run.data.metrics['val_acc']:.4f}</td>" in page
    images = page.count('src="data:image/png;base64,')
    assert images == len([p for p in out.iterdir() if p.suffix == ".png"]) >= 3


# An Optuna sweep for two asynchronous workers: lr=1e-7 cannot learn and is pruned at its first
# check, long before the others end.
def test_asynchronous_optuna_workers_reuse_a_pruned_trials_slot_at_once(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    proc = run_sweep(tmp_path, *ASYNC_SEARCH, *parallel, drop=("lr", "max_steps"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (parent,) = runs_in(store, parents=True)
    study = optuna.load_study(
        study_name=parent.data.tags["optuna_study"], storage=f"sqlite:///{tmp_path}/optuna.db"
    )
    assert_no_barrier(study, runs_in(store), parent)
