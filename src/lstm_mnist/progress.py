"""Lightning's tqdm progress bar, closed when a run stops on an error."""

from __future__ import annotations

from typing import Any

from pytorch_lightning.callbacks import TQDMProgressBar


class ProgressBar(TQDMProgressBar):
    """TQDMProgressBar that ends its bars when fit, validate or test raises, so the error line
    printed next starts on a line of its own, not after the half-drawn bar."""

    def on_exception(self, *args: Any) -> None:
        for bar in ("train", "val", "test"):
            try:
                getattr(self, f"{bar}_progress_bar").close()
            except TypeError:  # that bar was never started
                pass
