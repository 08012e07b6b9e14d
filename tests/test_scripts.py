"""The scripts in bench/ and scripts/: each one imports, answers --help at once, and the throughput
bench runs end to end on a tiny model.

Every `bench/*.py` and `scripts/*.py` is found by glob, so a new script is covered as soon as it
is added; these tests catch a script left behind by a rename in src/.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("bench/*.py"), *ROOT.glob("scripts/*.py")])
# What --help must not import: it should answer before any of these loads (seconds each).
HEAVY = {"torch", "pytorch_lightning", "lightning", "mlflow", "optuna"}


def script_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_scripts_found() -> None:
    names = {script_id(p) for p in SCRIPTS}
    assert {"bench/throughput.py", "scripts/fetch_gpu_wheels.py"} <= names


@pytest.mark.parametrize("path", SCRIPTS, ids=script_id)
def test_script_imports(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing the script as a module runs no more than its definitions, and every name it
    imports at the top exists."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # scripts may add src/ or tests/ to it
    name = f"_script_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None)), f"{script_id(path)} has no main()"


@pytest.mark.parametrize("path", SCRIPTS, ids=script_id)
def test_script_help(path: Path, tmp_path: Path) -> None:
    """`python FILE --help` prints its usage and exits 0, without importing torch, Lightning,
    MLflow or Optuna (heavy imports come after argument parsing), from any folder."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(path), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    stderr = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert proc.returncode == 0, "\n".join(stderr)
    assert "usage" in proc.stdout.lower(), proc.stdout
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert not imported & HEAVY, f"--help imported {sorted(imported & HEAVY)}"
    assert not list(tmp_path.iterdir()), "--help wrote files"


@pytest.mark.slow
def test_throughput_smoke(tmp_path: Path) -> None:
    """The throughput bench, as small as it goes: a 1 x 8 LSTM, batch 8, one warm-up and two
    timed steps, one repetition, fp32, no matmul peak; it prints the result row with a ratio."""
    cmd = [sys.executable, str(ROOT / "bench" / "throughput.py")]
    cmd += ["--steps", "2", "--warmup", "1", "--reps", "1", "--precision", "32-true"]
    cmd += ["--num-layers", "1", "--num-units", "8", "--batch-size", "8"]
    cmd += ["--no-peak", "--quiet-bar"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # precision, product and plain samples/s, ratio, GFLOP/s
    row = re.search(r"^32-true\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+[\d.]+", proc.stdout, re.M)
    assert row, proc.stdout
    product, plain, ratio = (float(v) for v in row.groups())
    assert product > 0 and plain > 0 and ratio > 0
    assert ratio == pytest.approx(product / plain, rel=0.01, abs=0.001)
    assert "ratio = product / plain" in proc.stdout
