"""The house rules the code's layout promises (README, "What is where"), checked on the source:
who may read Hydra's runtime and the SLURM variables, who ends trials, what tracking/ imports,
and that the config checks and the code agree on every closed set of values."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import ROOT

from lstm_mnist import data, model, schema

PACKAGE = ROOT / "src" / "lstm_mnist"


def sources_matching(pattern: str) -> set[str]:
    """The package's modules (paths relative to it) whose code matches `pattern`."""
    return {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if re.search(pattern, path.read_text())
    }


def test_only_the_entry_point_and_the_sweepers_read_hydras_runtime():
    readers = sources_matching(r"\bHydraConfig\b")
    assert readers <= {"cli/train_command.py"} | {
        r for r in readers if r.startswith("sweeping/")
    }, readers
    assert "cli/train_command.py" in readers


def test_only_cluster_py_knows_the_slurm_variables():
    assert sources_matching(r"[\"']SLURM_[A-Z_]+[\"']") == {"cluster.py"}
    assert sources_matching(r"\bos\.environ\b") <= {
        "cli/__init__.py",
        "cli/train_command.py",
        "interrupts.py",  # its own variable: the sweep's pid, set by the sweep loop
        "sweeping/loop.py",
    }


def test_trials_are_ended_in_one_place_and_tracking_has_no_sweeper():
    assert sources_matching(r"\.tell\(") == {"sweeping/optuna/study.py"}
    tracking = {
        s for s in sources_matching(r"hydra\.plugins|Sweeper\b") if s.startswith("tracking")
    }
    assert tracking == set()
    assert sources_matching(r"set_terminated|update_run\(") == {"tracking/status.py"}


def test_the_config_checks_and_the_code_agree_on_every_closed_set():
    assert schema.CELL_TYPES == tuple(model.CELLS)
    assert schema.DATASETS == tuple(data.DEFAULT_DIRS)
    checked = set(schema.RULES)
    assert {"model.cell", "data.name", "data.device", "trainer.accelerator"} <= checked
    assert {"model.lr_schedule", "objective.metric", "objective.direction"} <= checked


def test_no_two_modules_share_a_name_with_the_users_scripts():
    scripts = {p.name for p in (ROOT / "src").glob("*.py")}
    modules = {p.name for p in PACKAGE.rglob("*.py")} - {"__init__.py"}
    assert scripts & modules == set(), scripts & modules
    assert not list(Path(PACKAGE).rglob("utils.py"))


def test_every_test_the_readme_names_exists():
    # The failure table and the feature notes cite tests by name; a test merged or renamed to
    # make the suite faster must take its citations with it.
    cited = set(re.findall(r"\b(test_\w+\.py)::(test_\w+)", (ROOT / "README.md").read_text()))
    assert len(cited) > 20  # the failure table's rows at least
    missing = {
        f"{file}::{name}"
        for file, name in cited
        if not re.search(rf"^def {name}\(", (ROOT / "tests" / file).read_text(), re.M)
    }
    assert not missing, missing
