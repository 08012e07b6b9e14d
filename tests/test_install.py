"""The commands as installed: quick to answer --help and typos, and a non-editable install that
finds its bundled data and named sweeps from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT, runs_in

HEAVY = {"torch", "mlflow", "optuna", "pytorch_lightning"}


def imported_modules(*args: str, cwd) -> tuple[subprocess.CompletedProcess, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args], capture_output=True, text=True, cwd=cwd
    )
    names = {
        line.split("|")[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    return proc, names


@pytest.mark.parametrize(
    "command",
    [
        ["src/train.py", "--help"],
        ["src/train.py", "num_layer=3"],
        ["src/predict.py", "--help"],
        ["src/compare.py", "--help"],
        ["src/clean.py", "--help"],
        ["src/sweeps.py", "--help"],
        ["src/sweeps.py", "stop", "--help"],
        ["src/sweeps.py", "lst"],
    ],
)
def test_help_and_typo_answer_without_heavy_imports(tmp_path, command):
    proc, names = imported_modules(str(ROOT / command[0]), *command[1:], cwd=tmp_path)
    bad = "num_layer=3" in command or "lst" in command  # argparse's own exit for a typo: 2
    assert proc.returncode == ((2 if "lst" in command else 1) if bad else 0), proc.stderr[-2000:]
    assert "lstm_mnist" in names
    assert names & HEAVY == set()


def test_help_page_lists_knobs_groups_recipes_and_sweeps_with_their_values(tmp_path):
    from lstm_mnist.schema import RULES

    help_page = subprocess.run(
        [sys.executable, str(ROOT / "src" / "train.py"), "num_layers=2", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    lines = help_page.splitlines()
    for knob in RULES:
        assert any(line.split()[:1] == [knob] for line in lines if line), knob
    assert "  num_layers        stacked recurrent layers (2)" in lines  # the value it would use
    groups = ["data: fashion_mnist, mnist", "trainer: cpu, ddp, ddp_cpu, gpu"]
    groups.append("experiment: best, fast")
    for group in groups:
        assert group in lines
    for recipe in (ROOT / "conf" / "experiment").glob("*.yaml"):
        assert any(line.split()[:1] == [recipe.stem] for line in lines), recipe.stem
    for sweep in (ROOT / "sweeps").glob("*.yaml"):
        named = any(line.split()[:1] == [sweep.stem] for line in lines)
        assert named == (sweep.stem != "default"), sweep.stem
    examples = [line for line in lines if line.startswith("  python src/train.py") and "# " in line]
    assert len(examples) == 3
    keys = {line.split()[0].rstrip(":") for line in lines if line.strip()}
    assert keys.isdisjoint({"sweep", "parent_run", "hydra", "_target_"})  # no config blocks
    assert "Powered by Hydra" not in help_page


@pytest.mark.slow
def test_non_editable_install_finds_its_data_and_sweeps_from_another_folder(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "src", "conf", "sweeps", "data"):
        if (ROOT / name).is_dir():  # src/lstm_mnist/bundled holds links: keep them links
            shutil.copytree(ROOT / name, source / name, symlinks=True)
        else:
            shutil.copy2(ROOT / name, source / name)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--target", str(site), str(source)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(source)  # nothing may come from the source tree any more
    bundled = site / "lstm_mnist" / "bundled"
    assert (bundled / "data" / "mnist" / "SHA256SUMS").is_file() and not bundled.is_symlink()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(site)  # before the checkout's editable install
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    tiny = ["num_units=16", "batch_size=64", "max_steps=20", "val_every=20", "log_every=10"]
    tiny += ["artifacts.model=false", "artifacts.pictures=false", "data.eval_batch_size=2500"]
    proc = subprocess.run(
        [str(site / "bin" / "lstm-mnist-train"), "-m", "sweeps=layers", *tiny],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = runs_in(f"sqlite:///{elsewhere}/mlflow.db")
    assert sorted(r.data.params["num_layers"] for r in runs) == ["1", "2", "3"]
    where = subprocess.run(
        [sys.executable, "-c", "import lstm_mnist; print(lstm_mnist.__file__)"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
    )
    assert where.stdout.startswith(str(site))
