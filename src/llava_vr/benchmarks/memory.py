# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Peak tensor memory of a call, the same quantity on CPU and CUDA.

Tensor memory allocated during the call above what was resident before it (weights, inputs): on CUDA
`torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`; on CPU the PyTorch profiler's allocator events
(`profile_memory=True`), whose running sum (allocations minus frees, in time order) peaks at the same quantity.
Process RSS is not used: glibc keeps freed blocks, so RSS deltas hide later peaks (and forcing `mmap` for large blocks
slowed the timed runs by up to 2x).
"""

from pathlib import Path

import torch

from .machine import quiet_profile, synchronize


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def process_peak_rss_gib() -> float | None:
    """Peak resident set size of this process so far (`VmHWM`), GiB."""
    kib = _proc_status_kib("VmHWM")
    return None if kib is None else kib / 2**20


class PeakMemory:
    """Context manager measuring the peak of tensor memory allocated inside it, over what was allocated before.

    Both methods count tensor memory only (no allocator caching, no Python objects), so CPU and CUDA numbers compare.
    `.extra_mib` = peak over the memory resident at entry; `.total_mib` = absolute peak (CUDA only; the CPU profiler
    does not see earlier allocations, so `.total_mib` is the process peak RSS there)."""

    CPU_METHOD = "torch.profiler(profile_memory=True) allocator events: peak of (allocated - freed) during the call"
    CUDA_METHOD = "torch.cuda.max_memory_allocated() - memory_allocated() before the call"

    def __init__(self, device: torch.device):
        self.device = device
        self.extra_mib = self.total_mib = None

    @classmethod
    def describe(cls, device: torch.device) -> str:
        return cls.CUDA_METHOD if device.type == "cuda" else cls.CPU_METHOD

    def __enter__(self):
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._profile = quiet_profile(self.device, profile_memory=True)
        self._profile.__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.total_mib = peak / 2**20
            self.extra_mib = max(peak - self._base, 0) / 2**20
            return False
        self._profile.__exit__(*exc)
        try:  # raw allocator events (the aggregated FunctionEvents attribute allocations to ops, not to time)
            events = self._profile.profiler.kineto_results.events()
            deltas = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
        except AttributeError:  # another PyTorch: no CPU peak rather than a wrong one
            self.total_mib = (process_peak_rss_gib() or 0) * 1024
            return False
        current = peak = 0
        for _, nbytes in deltas:
            current += nbytes
            peak = max(peak, current)
        self.extra_mib = peak / 2**20
        self.total_mib = (process_peak_rss_gib() or 0) * 1024
        return False


__all__ = ["PeakMemory", "process_peak_rss_gib"]
