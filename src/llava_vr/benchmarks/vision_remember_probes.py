# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""What the Vision Remember micro-benchmark measures on one case: FLOPs per part, dispatched operators and shapes,
peak memory (untimed), the time spans of a forward, the per-operator profile, and the summary of the timed rounds."""

import math
from collections import Counter
from contextlib import ExitStack, contextmanager

import torch

from .dispatch import OpRecorder
from .flops import flop_counter, module_flops
from .machine import synchronize
from .memory import PeakMemory
from .profiler import quiet_profile
from .timing import Marks, around_forward, median

OP_CLASSES = {  # profiler op name fragment -> class (first match wins)
    "scaled_dot_product": "attention (SDPA)",
    "flash_attention": "attention (SDPA)",
    "attention": "attention (SDPA)",
    "addmm": "matmul", "aten::mm": "matmul", "bmm": "matmul", "aten::matmul": "matmul", "aten::linear": "matmul",
    "index": "gather/scatter", "gather": "gather/scatter", "scatter": "gather/scatter", "index_put": "gather/scatter",
    "layer_norm": "norm", "rms": "norm", "aten::pow": "norm", "aten::rsqrt": "norm", "aten::mean": "norm",
    "copy_": "copy/cast", "aten::to": "copy/cast", "_to_copy": "copy/cast", "contiguous": "copy/cast",
    "clone": "copy/cast", "cat": "copy/cast",
}
SUBMODULES = {"expand": ("input_norm", "expand_in", "expand_out"), "cross_attention": ("cross_attention",),
              "self_attention": ("self_attention",), "output": ("output_norm", "output_proj")}
# time spans inside one forward: the per-layer work on the whole feature map (plain formulation: LayerNorm + K/V
# projections of every cell; the absorbed formulation has none, its affine-free normalisation runs once per LLM
# forward in `VisionRememberInputs.build`), the rest of the cross-attention (queries, gather, attention, value and
# output projections; absorbed: the queries mapped to the feature width and the attended features projected once per
# token and head), the token self-attention
SPANS = {"feature_kv": ("cross_attention.feature_norm", "cross_attention.k_proj", "cross_attention.v_proj"),
         "cross_attention": ("cross_attention",), "self_attention": ("self_attention",)}


def classify(name: str) -> str:
    for fragment, label in OP_CLASSES.items():
        if fragment in name:
            return label
    return "other element-wise"


def profile_breakdown(module, hidden, inputs, device) -> dict:
    """Self time per operator class and the top operators (one profiled forward after one more warm-up)."""
    with torch.inference_mode():
        module(hidden, inputs)
        synchronize(device)
        with quiet_profile(device) as prof:
            module(hidden, inputs)
            synchronize(device)
    time_attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    stats = [(e.key, getattr(e, time_attr), e.count) for e in prof.key_averages()]
    stats = [s for s in stats if s[1] > 0 and not s[0].startswith("ProfilerStep")]
    total = sum(s[1] for s in stats) or 1.0
    classes = Counter()
    for name, us, _ in stats:
        classes[classify(name)] += us
    top = sorted(stats, key=lambda s: -s[1])[:12]
    return {
        "by_class_pct": {k: 100 * v / total for k, v in classes.most_common()},
        "top_ops": [{"op": n, "self_ms": us / 1e3, "pct": 100 * us / total, "calls": c} for n, us, c in top],
    }


@contextmanager
def span_marks(module, marks: Marks):
    """Marks the `SPANS` of `module`'s forwards inside the block (sub-modules an interaction lacks are skipped)."""
    with ExitStack() as stack:
        for span, names in SPANS.items():
            for name in names:
                try:
                    sub = module.get_submodule(name)
                except AttributeError:
                    continue
                stack.enter_context(around_forward(sub, marks.start, lambda m, span=span: marks.stop(m, span)))
        yield marks


def _cross_attention_pass(module, inputs, device, dtype) -> OpRecorder:
    recorder = OpRecorder()
    with recorder:
        module.cross_attention(
            torch.zeros(inputs.positions.numel(), module.expand_out.out_features, device=device, dtype=dtype), inputs
        )
    return recorder


def _flops_by_part(per_module: dict[str, int]) -> tuple[dict[str, float], float]:
    """GFLOP per `SUBMODULES` part, and of the feature LayerNorm + K/V projections."""
    sub_flops = {
        part: sum(v for k, v in per_module.items() if any(k == f"VisionRemember.{name}" for name in names))
        for part, names in SUBMODULES.items()
    }
    kv_flops = sum(v for k, v in per_module.items() if k in {f"VisionRemember.{n}" for n in SPANS["feature_kv"]})
    return {k: v / 1e9 for k, v in sub_flops.items()}, kv_flops / 1e9


def _cross_attention_report(cross: OpRecorder, cells: int, tiles: int, heads: int) -> dict:
    """What the cross-attention alone dispatched: attention kernels and their shapes, gathers, score tensor sizes."""
    kernels = {k: v for k, v in cross.ops.items() if "attention" in k or k in ("bmm", "baddbmm", "_softmax")}
    gather_ops = {k: v for k, v in cross.ops.items() if k in ("index", "gather", "index_select", "take", "embedding")}
    # an attention score tensor over a whole tile's feature map: a (cells x cells) trailing block
    square = sorted({s for _, s in cross.shapes if len(s) >= 2 and s[-1] == s[-2] == cells})
    score_elements = sum(math.prod(c["q"][:-1]) * c["k"][-2] for c in cross.attention_calls if "k" in c)
    return {
        "cross_attention_ops": sum(cross.ops.values()),
        "cross_attention_calls": cross.attention_calls,
        "cross_attention_heads": heads,
        "cross_attention_kernels": kernels,
        "cross_attention_gather_ops": gather_ops,
        "cross_attention_score_elements_per_tile": score_elements / tiles,
        "cross_attention_cells_x_cells_tensors": [list(s) for s in square],
        "cross_attention_largest": [{"op": n, "shape": list(s), "mib": b / 2**20} for b, n, s in cross.largest[:3]],
    }


def instrument_case(config, module, tiles, hidden, inputs, device, dtype) -> tuple[dict, torch.Tensor]:
    """Untimed passes of one case: FLOPs (per part), dispatched ops and shapes, peak memory; and the output."""
    with torch.inference_mode():
        with flop_counter() as counter, OpRecorder() as recorder:
            output = module(hidden, inputs)
        cross = _cross_attention_pass(module, inputs, device, dtype)
        with PeakMemory(device) as memory:
            module(hidden, inputs)
    per_module = module_flops(counter)
    gflop_by_part, gflop_kv = _flops_by_part(per_module)
    cells = config.patch_grid_size**2
    return {
        "tiles": tiles,
        "tokens": tiles * config.num_image_tokens_per_tile,
        "feature_cells": tiles * cells,
        "peak_extra_mib": memory.extra_mib,
        "gflop": per_module.get("Global", 0) / 1e9,
        "gflop_by_part": gflop_by_part,
        "gflop_feature_kv": gflop_kv,
        "dispatched_ops": sum(recorder.ops.values()),
        **_cross_attention_report(cross, cells, tiles, config.vision_remember_num_heads),
        "largest_intermediates": [{"op": n, "shape": list(s), "mib": b / 2**20} for b, n, s in recorder.largest[:5]],
    }, output


def summarise(row: dict, forward_s: list, build_s: list, spans: list, limit_gflops: float):
    """Adds the medians of the timed rounds to `row`: forward and build ms, time by part, GFLOP/s vs the matmul."""
    ms = median(forward_s) * 1e3
    parts = {key: median([s.get(key, 0.0) for s in spans]) for key in SPANS}
    gflops_s = row["gflop"] / (ms / 1e3) if ms else None
    row.update(
        forward_ms=ms,
        forward_ms_min=min(forward_s) * 1e3,
        forward_ms_runs=[t * 1e3 for t in forward_s],
        build_ms=median(build_s) * 1e3,
        time_ms_by_part={
            "feature_kv": parts["feature_kv"],
            "cross_attention_rest": parts["cross_attention"] - parts["feature_kv"],
            "self_attention": parts["self_attention"],
            "other": ms - parts["cross_attention"] - parts["self_attention"],
        },
        achieved_gflops=gflops_s,
        matmul_limit_gflops=limit_gflops,
        pct_of_matmul=100 * gflops_s / limit_gflops if gflops_s and limit_gflops else None,
        limit_ms=row["gflop"] / limit_gflops * 1e3 if limit_gflops else None,
    )
    row["x_limit"] = ms / row["limit_ms"] if row["limit_ms"] else None


__all__ = ["OP_CLASSES", "SPANS", "SUBMODULES", "classify", "instrument_case", "profile_breakdown", "span_marks",
           "summarise"]
