"""A heartbeat: a timestamp written while something works, so that whoever finds it old knows
its process died without a word (SIGKILL, a lost node). Runs, Optuna trials and a sweep's parent
run beat one; training beats from its hooks (tracking.run.HeartbeatCallback), a sweep from a
background thread."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Heartbeat:
    """Calls `beat` when called, at most once every `every_s` seconds."""

    def __init__(self, beat: Callable[[], None], every_s: float) -> None:
        self.beat, self.every_s = beat, every_s
        self.last = -float("inf")

    def __call__(self) -> None:
        if (now := time.monotonic()) - self.last >= self.every_s:
            self.last = now
            self.beat()

    def in_background(self) -> Callable[[], None]:
        """Beat every `every_s` from a daemon thread until the returned function is called. A
        beat that raises (the store is away for a moment) is logged and tried again next time."""
        stop = threading.Event()

        def loop() -> None:
            while True:
                try:
                    self.beat()
                except Exception as err:
                    log.warning(f"heartbeat: {err}")
                if stop.wait(self.every_s):
                    return

        threading.Thread(target=loop, name="heartbeat", daemon=True).start()
        return stop.set
