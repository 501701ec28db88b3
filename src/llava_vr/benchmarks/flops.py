# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Arithmetic: FLOPs of a call and the machine's practical matmul speed.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions, attention; element-wise ops,
norms, softmax, gathers are not counted). The CPU fused attention kernel (`_scaled_dot_product_flash_attention_for_cpu`)
is missing from PyTorch's table and is added here with the same formula as the CUDA kernels; causal attention is
counted as dense, as PyTorch does.
"""

import time

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .machine import synchronize


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    """A silent `FlopCounterMode` that also counts the CPU fused SDPA kernel."""
    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _cpu_sdpa_flop
    return FlopCounterMode(display=False, custom_mapping=mapping)


def module_flops(counter: FlopCounterMode) -> dict[str, int]:
    """Total FLOPs per tracked module name (`Global` = everything)."""
    return {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, sizes=(1024, 2048, 4096), repeats: int = 5) -> dict:
    """Achieved GFLOP/s of a plain square matmul (the machine's practical arithmetic limit), best over `sizes`:
    `{"gflops", "size", "by_size": {n: GFLOP/s}}`."""
    results = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        times = []
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            a @ b
            synchronize(device)
            times.append(time.perf_counter() - start)
        results[n] = 2 * n**3 / min(times) / 1e9
        del a, b
    best = max(results, key=results.get)
    return {"gflops": results[best], "size": best, "by_size": results}


__all__ = ["flop_counter", "matmul_peak_gflops", "module_flops"]
