# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Clocks: wall time of a call as a user sees it, and spans inside one timed call.

A call's time is `time.perf_counter` around it with `torch.cuda.synchronize()` before and after on CUDA (Python and
launch overheads included). Spans inside a call use `perf_counter` marks on CPU and `torch.cuda.Event`s on CUDA (no
extra synchronisation inside the timed call).
"""

import statistics
import time
from collections.abc import Callable, Hashable
from contextlib import ExitStack, contextmanager

import torch

from .machine import synchronize


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds taken by `fn()`, synchronised on CUDA."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def median(values):
    """Median of the values that are not `None`; `None` when there are none."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Marks:
    """Start/stop marks for spans inside one timed call: `perf_counter` on CPU, CUDA events on GPU.

    `start(key)` / `stop(key, name)` bracket one span (`key`: anything hashable, e.g. the module being timed; spans
    with the same key must not overlap); `totals_ms()` sums each name's spans after the call has been synchronised."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.spans: dict[str, list] = {}
        self._open: dict[Hashable, object] = {}

    def _mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self, key: Hashable) -> None:
        self._open[key] = self._mark()

    def stop(self, key: Hashable, name: str) -> None:
        begin = self._open.pop(key)
        self.spans.setdefault(name, []).append((begin, self._mark()))

    def totals_ms(self) -> dict[str, float]:
        """Sum of each span name's durations in ms (call after synchronising)."""
        if self.cuda:
            return {name: sum(b.elapsed_time(e) for b, e in spans) for name, spans in self.spans.items()}
        return {name: sum(e - b for b, e in spans) * 1e3 for name, spans in self.spans.items()}


@contextmanager
def around_forward(module: torch.nn.Module, before: Callable, after: Callable):
    """Inside the block, every forward of `module` calls `before(module)` first and `after(module)` last (hooks,
    removed on exit); e.g. `around_forward(layer, marks.start, lambda m: marks.stop(m, "layer"))`."""
    with ExitStack() as stack:
        stack.callback(module.register_forward_pre_hook(lambda m, args: before(m)).remove)
        stack.callback(module.register_forward_hook(lambda m, args, output: after(m)).remove)
        yield


__all__ = ["Marks", "around_forward", "median", "timed"]
