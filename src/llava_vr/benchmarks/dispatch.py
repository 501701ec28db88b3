# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The aten operators a call dispatches: how many (`OpCounter`), and which, with their shapes (`OpRecorder`)."""

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode


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


__all__ = ["OpCounter", "OpRecorder"]
