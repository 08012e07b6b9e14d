"""Download, into .whl/, the wheels scripts/gpu_check.sh needs on a lent GPU machine.

That machine's image (Python 3.12, x86-64) has torch, Lightning, torchmetrics, matplotlib, pandas,
... but not hydra-core or mlflow, and it reaches no registry. This takes the dependency closure of
the project's runtime needs (as installed in this venv, same versions), drops what the image
already has (scripts/gpu_image_packages.txt, from the device notes), and `pip download`s the rest
as cp312 manylinux wheels (pure-Python sdists, antlr4 4.9.3, are built into wheels here).

    python scripts/fetch_gpu_wheels.py        # then carry ".whl" with scripts/gpu_check.sh
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
ROOTS = ["hydra-core", "omegaconf", "mlflow", "optuna"]  # what src/train.py and the tests import
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34)]
PLATFORMS += ["manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[str], have: set[str]) -> dict[str, str]:
    """name -> version, for every installed distribution the roots need and the image lacks."""
    need: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = norm(todo.pop())
        if name in need or name in have:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # optional, not installed here either
        need[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            env = {"python_version": "3.12", "sys_platform": "linux", "platform_system": "Linux"}
            if req.marker and not req.marker.evaluate({**env, "extra": ""}):
                continue
            todo.append(req.name)
    return need


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.parse_args()
    have = {
        norm(n)
        for n in (ROOT / "scripts/gpu_image_packages.txt").read_text().split()
        if not n.startswith("#")
    }
    need = closure(ROOTS, have)
    dest = ROOT / ".whl"
    dest.mkdir(exist_ok=True)
    exclude = ROOT / ".git/info/exclude"
    exclude.parent.mkdir(exist_ok=True)
    if "/.whl/" not in (exclude.read_text() if exclude.exists() else ""):
        with exclude.open("a") as f:
            f.write("/.whl/\n")
    pip = [sys.executable, "-m", "pip"]
    for name, version in sorted(need.items()):
        spec = f"{name}=={version}"
        plat = sum((["--platform", p] for p in PLATFORMS), [])
        got = subprocess.run(
            [*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
             "3.12", "--implementation", "cp", *plat, "-d", str(dest), spec],
            capture_output=True, text=True,
        )  # fmt: skip
        if got.returncode:  # no wheel on the index (a pure-Python sdist): build one here
            subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(dest), spec], check=True)
        print(spec, flush=True)
    size = sum(f.stat().st_size for f in dest.glob("*.whl"))
    print(f"{len(need)} wheels in {dest}, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
