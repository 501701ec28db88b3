# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Where a benchmark runs: device, dtype, CPU threads, and the machine description written into each result's `meta`."""

import os
import platform
from contextlib import contextmanager
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str | None) -> torch.device:
    """`None` / `"auto"`: CUDA when available, else CPU; anything else as `torch.device(name)`."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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


__all__ = [
    "DTYPES",
    "available_cores",
    "cpu_model_name",
    "dtype_name",
    "loadavg",
    "machine_info",
    "resolve_device",
    "resolve_dtype",
    "synchronize",
    "torch_threads",
]


def run_benchmark(parser, presets: dict, body, argv: list[str] | None, prog: str):
    """A benchmark's `run`: parses `argv`, resolves its preset, device, dtype and thread count (tiny ops gain nothing
    from a second thread, and on a busy machine OpenMP barriers make them 100x slower), and returns
    `body(args, preset, device, dtype, threads, command)` with torch's thread count restored afterwards."""
    from .reporting import command_line

    args = parser.parse_args(argv)
    preset = presets[args.preset]
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device, preset["cpu_dtype"])
    with torch_threads(args.threads or preset.get("threads") or available_cores()) as threads:
        return body(args, preset, device, dtype, threads, command_line(prog, argv))
