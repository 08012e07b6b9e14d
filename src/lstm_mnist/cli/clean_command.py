"""Free disk space: checkpoints no run can resume from, and runs deleted in the MLflow UI.

    python src/clean.py                # remove checkpoints of FINISHED or deleted runs
    python src/clean.py --dry-run      # say what would go, remove nothing
    python src/clean.py --deleted-runs # also purge runs deleted in the UI (mlflow gc)

Checkpoints of KILLED, FAILED or RUNNING runs stay: `resume=<run id>` continues from them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from lstm_mnist.cli import ExitCode, add_store_options, fail, quiet

RESUMABLE = ("KILLED", "FAILED", "RUNNING")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt-dir", type=Path, default=Path("checkpoints"), help="(ckpt_dir)")
    parser.add_argument("--dry-run", action="store_true", help="list, remove nothing")
    parser.add_argument(
        "--deleted-runs", action="store_true", help="purge runs deleted in the UI: mlflow gc"
    )
    add_store_options(parser)
    parser.epilog = "\n".join(__doc__.splitlines()[2:])
    args = parser.parse_args(argv)
    quiet()

    from mlflow.exceptions import MlflowException

    from lstm_mnist.tracking import Store, StoreError

    store = Store(args.tracking_uri, args.experiment, option="--tracking-uri")
    try:  # else, in a wrong store, every checkpoint would be "not in the store" and go
        store.check(experiment=True)
    except StoreError as err:
        fail(err)
    client = store.client
    folders = (
        sorted(p for p in args.ckpt_dir.glob("*") if p.is_dir()) if args.ckpt_dir.is_dir() else []
    )
    freed, removed, kept = 0, 0, []
    for folder in folders:
        try:
            run = client.get_run(folder.name)
            status = "deleted" if run.info.lifecycle_stage == "deleted" else run.info.status
        except MlflowException:  # purged, or never in this store
            status = "not in the store"
        if status in RESUMABLE:
            kept.append(f"{folder.name} ({status})")
            continue
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {folder} ({status}, {size / 1e6:.1f} MB)")
        if not args.dry_run:
            shutil.rmtree(folder)
        freed, removed = freed + size, removed + 1
    verb = "would free" if args.dry_run else "freed"
    print(
        f"{removed} checkpoint folder(s), {verb} {freed / 1e6:.1f} MB; kept {len(kept)} resumable"
        + (f": {', '.join(kept)}" if kept else "")
    )
    if args.deleted_runs and not args.dry_run:
        try:
            store.gc()
        except StoreError as err:
            fail(err)
    sys.exit(ExitCode.OK)
