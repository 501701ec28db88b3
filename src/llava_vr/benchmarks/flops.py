# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""What a call computes: its FLOPs, the aten operators it dispatches, and the machine's practical matmul speed.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions, attention; element-wise ops,
norms, softmax, gathers are not counted). The CPU fused attention kernel (`_scaled_dot_product_flash_attention_for_cpu`)
is missing from PyTorch's table and is added here with the same formula as the CUDA kernels; causal attention is
counted as dense, as PyTorch does. Dispatched operators: how many (`OpCounter`), and which, with their shapes
(`OpRecorder`).
"""

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .timing import timed


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


def matmul_gflops(a: torch.Tensor, b: torch.Tensor, device: torch.device) -> float:
    """Achieved GFLOP/s of one timed `a @ b` of two square `n x n` matrices."""
    return 2 * a.shape[0] ** 3 / timed(lambda: a @ b, device)[0] / 1e9


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, sizes=(1024, 2048, 4096), repeats: int = 5) -> dict:
    """Achieved GFLOP/s of a plain square matmul (the machine's practical arithmetic limit), best over `sizes`:
    `{"gflops", "size", "by_size": {n: GFLOP/s}}`."""
    results = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        results[n] = max(matmul_gflops(a, b, device) for _ in range(repeats))
        del a, b
    best = max(results, key=results.get)
    return {"gflops": results[best], "size": best, "by_size": results}


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched inside it (`.total`) and those that are not views (`.compute`: each is a kernel
    launch on CUDA, so `.compute` x per-op host cost approximates the host-side time of a latency-bound prefill)."""

    def __init__(self):
        super().__init__()
        self.total = self.compute = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.total += 1
        if not func.is_view:
            self.compute += 1
        return func(*args, **(kwargs or {}))


class OpRecorder(TorchDispatchMode):
    """Counts dispatched ops by name (`.ops`), keeps the 8 largest outputs (`.largest`: `(bytes, op, shape)`), every
    output shape (`.shapes`) and the query / key shapes of attention kernels (`.attention_calls`). Composite ops are
    decomposed as `FlopCounterMode` does, so an attention that falls back to the math path shows its score tensors."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()
        self.largest: list[tuple[int, str, tuple]] = []
        self.shapes: list[tuple[str, tuple]] = []
        self.attention_calls: list[dict] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket.__name__)
        with self:
            out = func.decompose(*args, **kwargs)
        if out is NotImplemented:
            out = func(*args, **kwargs)
            self.ops[name] += 1
            if "attention" in name:  # a kernel (not decomposed): its query / key shapes
                shapes = [tuple(a.shape) for a in args[:2] if isinstance(a, torch.Tensor)]
                self.attention_calls.append({"op": name, "q": shapes[0], "k": shapes[1]})
            for tensor in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(tensor, torch.Tensor):
                    self.shapes.append((name, tuple(tensor.shape)))
                    self.largest.append((tensor.numel() * tensor.element_size(), name, tuple(tensor.shape)))
            self.largest = sorted(self.largest, reverse=True)[:8]
        return out


__all__ = ["OpCounter", "OpRecorder", "flop_counter", "matmul_gflops", "matmul_peak_gflops", "module_flops"]
