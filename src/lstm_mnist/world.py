"""The processes and devices one training runs on, from the trainer flags a Lightning user types
(accelerator, devices, strategy, num_nodes, precision), checked against this machine before any
run is recorded: a flag that cannot work is refused in one line naming it, its value and what is
allowed, where Lightning would fail later in a multi-line traceback.

`World` is the answer: one process per device on each node, each a rank of one DDP training
(ranks.py starts them), or a single process. It imports nothing heavy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig

ACCELERATORS = ("cpu", "gpu", "cuda", "auto")
STRATEGIES = ("auto", "ddp", "ddp_spawn")  # ddp and ddp_spawn: a fresh process per rank
PRECISIONS = ("32-true", "32", "64-true", "64", "bf16-mixed", "bf16-true", "bf16")
PRECISIONS += ("16-mixed", "16-true", "16")  # GPU only
DEVICES_ALLOWED = "an integer >= 1, -1 (all), auto, or a list of GPU indices such as [0,1]"


class FlagError(ValueError):
    """A trainer flag that cannot work here; its message is the one line to show."""


@dataclass(frozen=True)
class World:
    """Where a training runs: `accelerator` (cpu or gpu), `devices` per node (GPU indices on
    gpu, a process count on cpu), `num_nodes`; more than one process in all is DDP."""

    accelerator: str
    devices: tuple[int, ...] | int
    num_nodes: int = 1

    @property
    def per_node(self) -> int:
        return len(self.devices) if isinstance(self.devices, tuple) else self.devices

    @property
    def size(self) -> int:
        return self.per_node * self.num_nodes

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def strategy(self) -> str:
        return "ddp" if self.distributed else "single_device"

    @property
    def gpus(self) -> tuple[int, ...]:
        return self.devices if isinstance(self.devices, tuple) else ()

    def trainer_flags(self) -> dict[str, Any]:
        """What the Trainer is given in place of the config's own accelerator and devices."""
        devices = list(self.devices) if isinstance(self.devices, tuple) else self.devices
        return {"accelerator": self.accelerator, "devices": devices, "num_nodes": self.num_nodes}

    def params(self, batch_size: int) -> dict[str, Any]:
        """What the run records about it: `batch_size` is per device (Lightning's convention)."""
        return {
            "world_size": self.size,
            "num_nodes": self.num_nodes,
            "strategy": self.strategy,
            "batch_size_per_device": batch_size,
            "global_batch_size": batch_size * self.size,
        }


def world_of(trainer: DictConfig, visible_gpus: int, tasks: int | None = None) -> World:
    """The World the trainer config asks for on a machine with `visible_gpus` CUDA GPUs; in a
    SLURM job of `tasks` tasks (one rank each), the flags must ask for that many processes.
    The values' forms are schema.RULES' to check (validate, first); this checks them against
    the machine and each other, raising FlagError in one line."""
    accelerator = str(trainer.accelerator)
    if accelerator == "auto":
        accelerator = "gpu" if visible_gpus else "cpu"
    if accelerator == "cuda":
        accelerator = "gpu"
    if accelerator == "gpu" and not visible_gpus:
        raise FlagError(
            f"trainer.accelerator={trainer.accelerator}: no CUDA GPU is visible on this machine;"
            " use trainer=cpu (or trainer=ddp_cpu for several processes)"
        )
    devices = (
        gpu_devices(trainer.devices, visible_gpus)
        if accelerator == "gpu"
        else cpu_devices(trainer.devices)
    )
    num_nodes = trainer.get("num_nodes", 1)
    world = World(accelerator, devices, num_nodes)
    if tasks is None and num_nodes > 1:
        raise FlagError(
            f"trainer.num_nodes={num_nodes}: several nodes need a SLURM job with a task per"
            " device (hydra/launcher=slurm hydra.launcher.nodes=N hydra.launcher.tasks_per_node=M)"
        )
    if tasks is not None and tasks > 1 and world.size != tasks:
        raise FlagError(
            f"trainer.devices={trainer.devices} trainer.num_nodes={num_nodes} ask for"
            f" {world.size} processes but the SLURM job has {tasks} tasks: make"
            " devices x num_nodes equal tasks_per_node x nodes"
        )
    precision = str(trainer.get("precision", "32-true"))
    if accelerator == "cpu" and precision.startswith("16"):
        raise FlagError(
            f"trainer.precision={precision}: float16 needs a GPU; on cpu use 32-true or bf16-mixed"
        )
    return world


def gpu_devices(devices: Any, visible: int) -> tuple[int, ...]:
    """The CUDA indices `devices` names out of `visible` GPUs."""
    noun = f"{visible} CUDA GPU{'s' if visible != 1 else ''} {'is' if visible == 1 else 'are'}"
    if isinstance(devices, (list, tuple, ListConfig)):
        indices = tuple(devices)
        if not indices or not all(isinstance(i, int) for i in indices):
            raise FlagError(
                f"trainer.devices={list(indices)} is invalid: must be {DEVICES_ALLOWED}"
            )
        wrong = [i for i in indices if not 0 <= i < visible]
        if wrong or len(set(indices)) != len(indices):
            raise FlagError(
                f"trainer.devices={list(indices)}: {noun} visible (indices 0..{visible - 1}),"
                " each named once"
            )
        return indices
    if devices in ("auto", -1, "-1"):
        return tuple(range(visible))
    count = as_count(devices)
    if count > visible:
        raise FlagError(f"trainer.devices={devices}: only {noun} visible on this machine")
    return tuple(range(count))


def cpu_devices(devices: Any) -> int:
    """How many processes `devices` asks for on the CPU."""
    if isinstance(devices, (list, tuple, ListConfig)):
        raise FlagError(
            f"trainer.devices={list(devices)}: a list names GPUs; on cpu give a process count"
        )
    if devices == "auto":
        return 1
    if devices in (-1, "-1"):
        return len(os.sched_getaffinity(0))
    return as_count(devices)


def devices_ok(devices: Any) -> bool:
    """Whether `devices` has an allowed form, whatever the machine (schema.RULES)."""
    if isinstance(devices, (list, tuple, ListConfig)):
        return len(devices) > 0 and all(isinstance(i, int) and i >= 0 for i in devices)
    if devices in ("auto", -1, "-1"):
        return True
    try:
        as_count(devices)
    except FlagError:
        return False
    return True


def as_count(devices: Any) -> int:
    try:
        count = int(devices)
    except (TypeError, ValueError):
        count = 0
    if isinstance(devices, bool) or count < 1 or str(count) != str(devices).strip():
        raise FlagError(f"trainer.devices={devices} is invalid: must be {DEVICES_ALLOWED}")
    return count
