"""A GPU of its own for each parallel job: real file locks, a given device list, no GPU needed."""

from __future__ import annotations

import multiprocessing
import threading
import time
from contextlib import ExitStack

import pytest

from lstm_mnist.devices import gpu_slot, gpu_slots


def test_one_job_per_gpu_before_any_gpu_gets_two(tmp_path):
    with ExitStack() as held:
        got = [held.enter_context(gpu_slot([0, 1, 2], 2, tmp_path)) for _ in range(6)]
    assert got == [0, 1, 2, 0, 1, 2]


def test_a_job_of_several_gpus_claims_distinct_ones_and_waits_for_enough(tmp_path):
    with ExitStack() as held:
        first = held.enter_context(gpu_slots([0, 1, 2, 3], 1, 2, tmp_path))
        second = held.enter_context(gpu_slots([0, 1, 2, 3], 1, 2, tmp_path))
        assert (first, second) == ([0, 1], [2, 3])
    got = []
    with gpu_slots([0, 1, 2, 3], 1, 3, tmp_path) as three:
        assert three == [0, 1, 2]
        waiter = threading.Thread(target=lambda: got.append(gpu_slots_once(tmp_path, count=2)))
        waiter.start()
        time.sleep(0.3)
        assert got == []  # only GPU 3 is free: it waits for a second one
    waiter.join(timeout=10)
    assert got == [[0, 1]]
    with pytest.raises(
        ValueError, match=r"gpus_per_job=5 is invalid: must be an integer in \[1, 4\]"
    ):
        gpu_slots_once(tmp_path, count=5)


def gpu_slots_once(lock_dir, count: int) -> list[int]:
    with gpu_slots([0, 1, 2, 3], 1, count, lock_dir, poll_s=0.05) as gpus:
        return gpus


def test_a_freed_slot_goes_to_the_next_job(tmp_path):
    with ExitStack() as held:
        first = held.enter_context(gpu_slot([3, 5], 1, tmp_path))
        with gpu_slot([3, 5], 1, tmp_path) as second:
            assert (first, second) == (3, 5)
        with gpu_slot([3, 5], 1, tmp_path) as third:  # 5 is free again, 3 still held
            assert third == 5


def test_a_job_waits_while_every_slot_is_taken(tmp_path):
    got = []
    with ExitStack() as held:
        held.enter_context(gpu_slot([0], 1, tmp_path))
        waiter = threading.Thread(target=lambda: got.append(claim(tmp_path)))
        waiter.start()
        time.sleep(0.5)
        assert got == []  # still waiting
    waiter.join(timeout=10)
    assert got == [0]


def claim(lock_dir) -> int:
    with gpu_slot([0], 1, lock_dir, poll_s=0.05) as gpu:
        return gpu


def hold(lock_dir, started, release, out) -> None:
    with gpu_slot([0, 1], 1, lock_dir, poll_s=0.05) as gpu:
        out.put(gpu)
        started.set()
        release.wait(10)


def test_processes_of_a_parallel_sweep_get_different_gpus(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    out, release = ctx.Queue(), ctx.Event()
    workers = []
    for _ in range(2):
        started = ctx.Event()
        worker = ctx.Process(target=hold, args=(tmp_path, started, release, out))
        worker.start()
        assert started.wait(60)
        workers.append(worker)
    assert sorted(out.get(timeout=10) for _ in workers) == [0, 1]
    release.set()
    for worker in workers:
        worker.join(timeout=30)


@pytest.mark.parametrize(
    "gpus, per_gpu, message",
    [([], 1, "no GPU is visible"), ([0], 0, "jobs_per_gpu=0 is invalid")],
)
def test_impossible_assignments_say_why(tmp_path, gpus, per_gpu, message):
    with pytest.raises(ValueError, match=message), gpu_slot(gpus, per_gpu, tmp_path):
        pass
