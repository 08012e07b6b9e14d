"""Where the configs, the named sweeps and the bundled MNIST are.

`bundled/` holds links to the repository's conf/, sweeps/ and data/; a built wheel stores them as
files (pyproject.toml), so a source checkout, an editable and a plain `pip install .` find them in
the same place.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED = Path(__file__).parent / "bundled"
CONF_DIR = BUNDLED / "conf"  # Hydra's primary config folder
SWEEPS_PARENT = BUNDLED  # on Hydra's search path, so that `sweeps=NAME` finds sweeps/NAME.yaml
DATA_DIR = BUNDLED / "data"  # data/mnist: the four IDX files; data/<name>/SHA256SUMS
