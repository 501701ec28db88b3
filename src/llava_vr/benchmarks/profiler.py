# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The PyTorch profiler, without Kineto's console lines.

Kineto (the profiler's backend) prints `USDT: ... profiler_start` / `profiler_stop` trace markers to stderr at every
profiled call unless its log level is above them; `KINETO_LOG_LEVEL` sets that level and is read when the first
profile of the process starts. `quiet_profile` sets it (unless the environment already does) and opens a profile.
"""

import os

import torch

KINETO_SILENT = "6"  # above USDT (5): no trace markers, no warnings


def quiet_profile(device: torch.device, **kwargs):
    """`torch.profiler.profile` over the CPU (and CUDA on a CUDA device) with Kineto's console output off."""
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", KINETO_SILENT)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    return profile(activities=activities, **kwargs)


__all__ = ["quiet_profile"]
