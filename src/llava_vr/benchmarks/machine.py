# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Where a benchmark runs: device, dtype, CPU threads, the machine description written into each result's `meta`, and
the PyTorch profiler without Kineto's console lines.

Kineto (the profiler's backend) prints `USDT: ... profiler_start` / `profiler_stop` trace markers to stderr at every
profiled call unless its log level is above them; `KINETO_LOG_LEVEL` sets that level and is read when the first
profile of the process starts. `quiet_profile` sets it (unless the environment already does) and opens a profile.
"""

import os
import platform
from contextlib import contextmanager
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
KINETO_SILENT = "6"  # above USDT (5): no trace markers, no warnings


def resolve_device(name: str | None) -> torch.device:
    """`None` / `"auto"`: CUDA when available, else CPU; anything else as `torch.device(name)`. Raises `ValueError`
    for a CUDA device on a machine without one."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this machine has no CUDA device (torch {torch.__version__})")
    return device


def resolve_dtype(name: str, device: torch.device, cpu_dtype: str) -> torch.dtype:
    """`"auto"`: bfloat16 on CUDA, `cpu_dtype` (a `DTYPES` name) on CPU; else `DTYPES[name]`."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else DTYPES[cpu_dtype]
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextmanager
def torch_threads(threads: int):
    """Runs the block with `torch.set_num_threads(threads)`, restoring the previous count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loadavg() -> tuple[float, float, float] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device, threads: int) -> dict:
    """CPU, GPU, library versions and load average: the `machine` block of a result's `meta`."""
    import transformers

    info = {
        "device": str(device),
        "cpu": cpu_model_name(),
        "cpu_cores_available": available_cores(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": loadavg(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def quiet_profile(device: torch.device, **kwargs):
    """`torch.profiler.profile` over the CPU (and CUDA on a CUDA device) with Kineto's console output off."""
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", KINETO_SILENT)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    return profile(activities=activities, **kwargs)


__all__ = [
    "DTYPES",
    "available_cores",
    "cpu_model_name",
    "dtype_name",
    "loadavg",
    "machine_info",
    "quiet_profile",
    "resolve_device",
    "resolve_dtype",
    "synchronize",
    "torch_threads",
]
