"""MLflow's own system metrics for a training run (its "System metrics" tab): CPU, memory, disk
and network, and the GPU's utilisation, memory and power where NVML sees one (with the `gpu`
extra: nvidia-ml-py). On a node whose GPUs are shared among jobs, only the job's own GPU is
recorded (MLflow records every GPU of the node: mlflow #13398)."""

from __future__ import annotations

import logging

from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

log = logging.getLogger(__name__)


class JobGPUMonitor(GPUMonitor):
    """MLflow's NVIDIA monitor, for the job's GPUs only: `uuids`, as CUDA names them."""

    def __init__(self, uuids: list[str]) -> None:
        import pynvml  # present: GPUMonitor() needs it

        super().__init__()
        self.gpu_handles = [
            h
            for h in self.gpu_handles
            if any(str(pynvml.nvmlDeviceGetUUID(h)).endswith(u) for u in uuids)
        ]


def system_monitor(
    run_id: str, tracking_uri: str, every_s: float, resumed: bool, gpus: tuple[int, ...] = ()
) -> SystemMetricsMonitor:
    """A started monitor of this node (under DDP across nodes: rank 0's) that samples every
    `every_s` seconds until `finish()`; with `gpus` (CUDA device indices), GPU metrics of those
    GPUs only, as `system/gpu_N_*`."""
    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=every_s, resume_logging=resumed, tracking_uri=tracking_uri
    )
    if gpus:
        import torch

        others = [m for m in monitor.monitors if not isinstance(m, GPUMonitor)]
        try:
            uuids = [str(torch.cuda.get_device_properties(gpu).uuid) for gpu in gpus]
            monitor.monitors = others + [JobGPUMonitor(uuids)]
        except Exception as err:  # no NVML (the gpu extra): CPU and memory only
            log.info(f"no GPU system metrics: {err}")
            monitor.monitors = others
    monitor.start()
    return monitor
