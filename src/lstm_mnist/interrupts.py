"""Ctrl-C and SIGTERM as an exception that stops a run without being its error, passed on to
the worker processes of a parallel sweep."""

from __future__ import annotations

import os
import signal
import threading


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM. A BaseException, like KeyboardInterrupt: it stops the run but is not
    the run's error, and Lightning passes it through instead of swallowing it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_interrupted(signum: int, frame: object) -> None:
    # A parallel sweep's workers first (their runs are then KILLED, not left RUNNING): once this
    # raises, the launcher may kill them outright.
    stop_workers(signum)
    raise Interrupted(signum)


SWEEPER_PID = "LSTM_MNIST_SWEEPER_PID"  # set by a sweep's process for the workers it starts


def in_worker_process() -> bool:
    """Whether this process is a worker a sweep's launcher started (joblib's)."""
    return os.environ.get(SWEEPER_PID, str(os.getpid())) != str(os.getpid())


def handle_interrupts() -> None:
    """From now on Ctrl-C and SIGTERM raise Interrupted (training checkpoints first: see
    checkpoints.CheckpointOnInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        return  # only a process's main thread may set handlers; it has them already
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, raise_interrupted)


def stop_workers(signum: int, wait_s: float = 60) -> int:
    """Pass `signum` on to every process this one started (the workers of a parallel sweep),
    so that each checkpoints and marks its run KILLED as this one does; wait for them, and kill
    any still there after `wait_s`. Returns how many there were. Processes that ignore the
    signal are left alone."""
    import psutil

    workers = [p for p in psutil.Process().children(recursive=True) if not ignores(p.pid, signum)]
    for worker in workers:
        try:
            worker.send_signal(signum)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(workers, timeout=wait_s)
    for worker in alive:
        worker.kill()
    return len(workers)


def ignores(pid: int, signum: int) -> bool:
    """Whether process `pid` ignores `signum` (helpers such as multiprocessing's resource
    tracker ignore SIGINT and SIGTERM, and end with this process). Linux only; elsewhere no."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("SigIgn:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except OSError:
        pass
    return False
