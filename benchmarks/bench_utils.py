# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Shared helpers of the LLaVA-VR benchmarks: clocks, peak-memory meters, FLOP counting, machine info, output files.

Measurement methods (also written into every result file's `meta`):

- time: `time.perf_counter` around the call, with `torch.cuda.synchronize()` before and after on CUDA (wall clock as a
  user sees it, Python and launch overheads included). Component breakdowns inside a call use `perf_counter` marks on
  CPU and `torch.cuda.Event`s on CUDA (no extra synchronisation inside the timed call).
- peak memory: tensor memory allocated during the prefill above what was resident before it (weights, inputs), in
  a separate instrumented run (the FLOP-count / warm-up run): on CUDA `torch.cuda.max_memory_allocated()` after
  `reset_peak_memory_stats()`; on CPU the PyTorch profiler's allocator events (`profile_memory=True`), whose running
  sum (allocations minus frees, in time order) peaks at the same quantity. Process RSS is not used: glibc keeps freed
  blocks, so RSS deltas hide later peaks (and forcing `mmap` for large blocks slowed the timed runs by up to 2x).
- FLOPs: `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions, attention; element-wise ops, norms,
  softmax, gathers are not counted). The CPU fused attention kernel (`_scaled_dot_product_flash_attention_for_cpu`) is
  missing from PyTorch's table and is added here with the same formula as the CUDA kernels; causal attention is
  counted as dense, as PyTorch does.
"""

import csv
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "src") not in sys.path:
    try:
        import llava_vr  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT / "src"))


# ---- device, dtype, threads ---------------------------------------------------------------------------------------
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device, threads: int) -> dict:
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
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ---- timing ---------------------------------------------------------------------------------------------------------
class Marks:
    """Start/stop marks for spans inside one timed call: `perf_counter` on CPU, CUDA events on GPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.spans: dict[str, list] = {}
        self._open: dict[int, tuple] = {}

    def _mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self, key) -> None:
        self._open[key if isinstance(key, int) else id(key)] = self._mark()

    def stop(self, key, name: str) -> None:
        begin = self._open.pop(key if isinstance(key, int) else id(key))
        self.spans.setdefault(name, []).append((begin, self._mark()))

    def totals_ms(self) -> dict[str, float]:
        """Sum of each span name's durations in ms (call after synchronising)."""
        out = {}
        for name, spans in self.spans.items():
            if self.cuda:
                out[name] = sum(b.elapsed_time(e) for b, e in spans)
            else:
                out[name] = sum(e - b for b, e in spans) * 1e3
        return out

    def reset(self):
        self.spans.clear()
        self._open.clear()


# ---- peak memory ----------------------------------------------------------------------------------------------------
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

    CUDA: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`. CPU: the PyTorch profiler's allocator
    events (`profile_memory=True`): the running sum of allocations minus frees, in time order, and its maximum. Both
    count tensor memory only (no allocator caching, no Python objects), so CPU and CUDA numbers compare.
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
        from torch.profiler import ProfilerActivity, profile

        self._profile = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
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


# ---- FLOPs ----------------------------------------------------------------------------------------------------------
def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _cpu_sdpa_flop
    return FlopCounterMode(display=False, custom_mapping=mapping)


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


def module_flops(counter: FlopCounterMode) -> dict[str, int]:
    """Total FLOPs per tracked module name (`Global` = everything)."""
    return {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, sizes=(1024, 2048, 4096), repeats: int = 5) -> dict:
    """Achieved GFLOP/s of a plain square matmul (the machine's practical arithmetic limit), best over `sizes`."""
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


# ---- output files ---------------------------------------------------------------------------------------------------
def write_json(path: Path, payload: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def write_csv(path: Path, rows: list[dict]):
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys and not isinstance(row[k], (dict, list))]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items() if k in keys})


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(value):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"
