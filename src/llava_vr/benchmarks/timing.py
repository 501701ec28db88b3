# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Clocks: wall time of a call as a user sees it, spans inside one timed call, the tokens of a `generate()` call, and
interleaved timed rounds.

A call's time is `time.perf_counter` around it with `torch.cuda.synchronize()` before and after on CUDA (Python and
launch overheads included). Spans inside a call use `perf_counter` marks on CPU and `torch.cuda.Event`s on CUDA (no
extra synchronisation inside the timed call).
"""

import random
import statistics
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import ExitStack, contextmanager

import torch

from .machine import synchronize


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """`(seconds, fn())`: the call's wall time, synchronised on CUDA, and what it returned."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def median(values):
    """Median of the values that are not `None`; `None` when there are none."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def interleaved_rounds(cases: int, repeats: int, seed: int = 0) -> Iterator[list[int]]:
    """`repeats` rounds, each every case index once in a shuffled order (`random.Random(seed + round)`): background
    load and drift hit all cases alike, which keeps their ratios stable on a shared machine."""
    order = list(range(cases))
    for round_index in range(repeats):
        random.Random(seed + round_index).shuffle(order)
        yield list(order)


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


class StepClock:
    """A `generate()` streamer that only notes the time of each `put` (`.times`): the prompt, then every new token
    (after the prefill, then after each decode step; `generate()` synchronises each step to decide whether to stop)."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


@contextmanager
def around_forward(module: torch.nn.Module, before: Callable, after: Callable):
    """Inside the block, every forward of `module` calls `before(module)` first and `after(module)` last (hooks,
    removed on exit); e.g. `around_forward(layer, marks.start, lambda m: marks.stop(m, "layer"))`."""
    with ExitStack() as stack:
        stack.callback(module.register_forward_pre_hook(lambda m, args: before(m)).remove)
        stack.callback(module.register_forward_hook(lambda m, args, output: after(m)).remove)
        yield


__all__ = ["Marks", "StepClock", "around_forward", "interleaved_rounds", "median", "timed"]
