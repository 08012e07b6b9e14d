"""Ctrl-C, SIGTERM and SIGHUP (a closed terminal, a dropped SSH session) as an exception that
stops a run without being its error, passed on to the worker processes of a parallel sweep.

A parallel sweep's workers are loky's (joblib's pool), and loky kills all its workers outright
(SIGKILL) as soon as one exits. So no worker may exit before every one has ended its run: a
worker takes interrupts only while it runs a job (interrupts_raised), stops itself once its run
is ended (wait_for_the_sweep), and the sweep's process kills them all once all are done
(stop_workers). One gap is loky's: a worker that has not run a job yet (n_jobs above the jobs
left) dies of the terminal's Ctrl-C (or its hangup), and loky then kills the others; SIGTERM has no
such gap.

A command started with SIGHUP ignored (`nohup`) keeps it ignored: it trains on once its terminal
is gone, as nohup's user asked."""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import psutil

INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SWEEPER_PID = "LSTM_MNIST_SWEEPER_PID"  # set by a sweep's process for the workers it starts


class Interrupted(BaseException):
    """Ctrl-C, SIGTERM or SIGHUP. A BaseException, like KeyboardInterrupt: it stops the run but
    is not the run's error, and Lightning passes it through instead of swallowing it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_interrupted(signum: int, frame: object) -> None:
    noted(signum)
    # A parallel sweep's workers first (their runs are then KILLED, not left RUNNING): once this
    # raises, the launcher may kill them outright.
    stop_workers(signum)
    raise Interrupted(signum)


@contextmanager
def interrupts_raised() -> Iterator[None]:
    """Within the block, Ctrl-C, SIGTERM and SIGHUP raise Interrupted (training checkpoints
    first: see checkpoints.CheckpointOnInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only a process's main thread may set handlers; it has them already
        return
    handlers = {signum: signal.signal(signum, raise_interrupted) for signum in handled()}
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        if in_worker_process():  # idle now: the terminal's Ctrl-C or hangup must not end it
            for signum in (signal.SIGINT, signal.SIGHUP):
                if signum in handlers:
                    signal.signal(signum, lambda signum, frame: None)


def handled() -> list[int]:
    """The interrupts this process stops on: all, but SIGHUP only if it was not started ignoring
    it (under nohup)."""
    return [
        s for s in INTERRUPTS if s != signal.SIGHUP or signal.getsignal(s) is not signal.SIG_IGN
    ]


def noted(signum: int) -> None:
    """Take note of an interrupt as it arrives: after SIGHUP the terminal may be gone, and a
    write to it fails (EIO), so stdout and stderr, where they are a terminal, go to /dev/null
    from then on (the run's outcome is in Hydra's log file and MLflow)."""
    if signum != signal.SIGHUP:
        return
    null = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        if on_a_terminal(fd, null):
            os.dup2(null, fd)
    os.close(null)


def on_a_terminal(fd: int, null: int) -> bool:
    """Whether `fd` is a terminal, also one hung up (isatty then says no): a character device
    other than /dev/null."""
    try:
        found = os.fstat(fd)
    except OSError:
        return False
    return stat.S_ISCHR(found.st_mode) and found.st_rdev != os.fstat(null).st_rdev


def in_worker_process() -> bool:
    """Whether this process is a worker a sweep's launcher started (joblib's)."""
    return os.environ.get(SWEEPER_PID, str(os.getpid())) != str(os.getpid())


def stop_workers(signum: int, wait_s: float = 60) -> int:
    """End the worker processes this one started (a parallel sweep's) so that each job running
    in one checkpoints and marks its run KILLED, as this process does: pass `signum` on to the
    workers running a job (those that handle SIGTERM: interrupts_raised), wait until each has
    stopped itself, then kill every worker, idle ones too. A Ctrl-C is not passed on: the
    terminal has sent it to the workers already, and a second would stop them at once (a
    repeated SIGHUP does not: checkpoints.CheckpointOnInterrupt, so it is passed on). After
    `wait_s`, workers still running are killed too. Returns how many ran a job. Helpers that
    ignore `signum` (multiprocessing's resource tracker) end with this process: left alone."""
    import psutil

    workers = [p for p in psutil.Process().children() if not ignores(p.pid, signum)]
    running = [p for p in workers if handles(p.pid, signal.SIGTERM)]
    for worker in running:
        try:
            if signum != signal.SIGINT or os.getpgid(worker.pid) != os.getpgrp():
                worker.send_signal(signum)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not all(stopped(p) for p in running):
        time.sleep(0.1)
    for worker in workers:
        try:
            for process in [*worker.children(recursive=True), worker]:
                process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(workers, timeout=10)
    return len(running)


def wait_for_the_sweep() -> NoReturn:
    """In a parallel sweep's worker whose run has ended: stop (SIGSTOP) rather than exit, and
    let the sweep's process end it once every worker is done (stop_workers)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGSTOP)
    os._exit(1)  # continued by someone else: there is nothing left to do


def stopped(process: psutil.Process) -> bool:
    import psutil

    try:
        return process.status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def ignores(pid: int, signum: int) -> bool:
    """Whether process `pid` ignores `signum`. Linux only; elsewhere no."""
    return in_signal_mask(pid, "SigIgn", signum, default=False)


def handles(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler for `signum`. Linux only; elsewhere yes."""
    return in_signal_mask(pid, "SigCgt", signum, default=True)


def in_signal_mask(pid: int, mask: str, signum: int, default: bool) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{mask}:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except OSError:
        pass
    return default
