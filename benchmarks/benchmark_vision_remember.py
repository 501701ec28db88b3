# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Micro-benchmark of one Vision Remember (VR) module alone: `sela` vs `global` vs `deformable`.

Builds `VisionRemember` and `VisionRememberInputs` directly (random weights, synthetic hidden states, multi-level
features, saliency and token cells: one image of `tiles` tiles of 12x12 = 144 tokens over 24x24 = 576-cell feature
maps, no newline tokens) and measures, as the token count grows:

- time of one VR forward (median after warm-up) and of `VisionRememberInputs.build` (once per LLM forward, shared by
  every VR layer);
- peak memory of the forward (tensor memory above the inputs; see `bench_utils`);
- FLOPs (`FlopCounterMode`, per sub-module) and achieved GFLOP/s, next to a plain matmul's GFLOP/s on the same machine
  and dtype (the "arithmetic limit"): `% of matmul` = achieved / limit, `limit ms` = FLOPs / limit;
- where the time goes (profiler, per operator class) for the largest case;
- structural checks, evaluated from the dispatched operators (a `TorchDispatchMode` records every op and its output
  shape): the number of dispatched ops does not grow with the tile count (no Python loop over tiles or windows), the
  number of attention / gather ops per cross-attention, and the largest intermediate tensor (nothing 576 x 576 per
  tile for SELA).

Examples:
    python benchmarks/benchmark_vision_remember.py --preset tiny
    python benchmarks/benchmark_vision_remember.py --preset real            # CPU: bfloat16, 1..16 tiles
    python benchmarks/benchmark_vision_remember.py --preset real --device cuda
"""

import argparse
import math
import os
import random
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_utils as bu  # noqa: E402

from llava_vr import LlavaVRConfig  # noqa: E402
from llava_vr.vision_remember_llava_vr import VisionRemember, VisionRememberInputs  # noqa: E402

PRESETS = {
    "tiny": dict(vision_hidden=32, vision_heads=4, image_size=56, patch_size=14, text_hidden=[64], tiles=[1, 2, 4],
                 cpu_dtype="float32", repeats=2, warmup=1, matmul_sizes=(256,), threads=1),
    # CLIP-ViT-L/14-336 features (1024 x 3 levels, 16 heads, 24x24 cells, 12x12 tokens per tile) into the widths of
    # Qwen2-0.5B (896) and Qwen2-1.5B (1536).
    "real": dict(vision_hidden=1024, vision_heads=16, image_size=336, patch_size=14, text_hidden=[896, 1536],
                 tiles=[1, 2, 4, 8, 16], cpu_dtype="bfloat16", repeats=5, warmup=2, matmul_sizes=(1024, 2048, 4096)),
}
INTERACTIONS = ("sela", "global", "deformable")
TEXT_TOKENS = 32

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


def build_config(preset: dict, text_hidden: int, interaction: str) -> LlavaVRConfig:
    return LlavaVRConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=preset["vision_hidden"],
                           intermediate_size=4 * preset["vision_hidden"], num_hidden_layers=4,
                           num_attention_heads=preset["vision_heads"], image_size=preset["image_size"],
                           patch_size=preset["patch_size"]),
        text_config=dict(model_type="qwen2", hidden_size=text_hidden, intermediate_size=4 * text_hidden,
                         num_hidden_layers=2, num_attention_heads=max(1, text_hidden // 64), num_key_value_heads=1,
                         vocab_size=1000),
        image_token_index=999,
        projector_type="adaptive_avg_pool",
        vision_remember_layers=[1],
        vision_remember_feature_layers=[1, 2, 3],
        vision_remember_interaction=interaction,
    )


def build_module(config, device, dtype, seed=0) -> VisionRemember:
    torch.manual_seed(seed)
    module = VisionRemember(config)  # plain nn init: random, non-zero output projection (a "trained" VR)
    return module.to(device, dtype).eval()


def synthetic_inputs(config, tiles: int, device, dtype, seed=0):
    """Hidden states `(1, S, D)` with `tiles * g*g` vision tokens after `TEXT_TOKENS // 2` text tokens, and the VR
    inputs over `(tiles, G*G, 3C)` features."""
    generator = torch.Generator().manual_seed(seed)
    g, grid = config.token_grid_size, config.patch_grid_size
    tokens = tiles * g * g
    seq = tokens + TEXT_TOKENS
    hidden = torch.randn(1, seq, config.text_config.hidden_size, generator=generator).to(device, dtype)
    mask = torch.zeros(1, seq, dtype=torch.bool)
    mask[0, TEXT_TOKENS // 2 : TEXT_TOKENS // 2 + tokens] = True
    levels = len(config.vision_remember_feature_layers)
    features = torch.randn(tiles, grid * grid, levels * config.vision_config.hidden_size, generator=generator)
    saliency = torch.rand(tiles, grid * grid, generator=generator)
    tile, row, col = torch.meshgrid(torch.arange(tiles), torch.arange(g), torch.arange(g), indexing="ij")
    cells = torch.stack((tile, row, col), -1).reshape(-1, 3)
    args = (mask.to(device), [features.to(device, dtype)], [saliency.to(device, dtype)], [cells.to(device)], g)
    return hidden, args


class OpRecorder(TorchDispatchMode):
    """Counts dispatched ops, keeps the largest outputs and the shapes of attention calls. Composite ops are
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


def classify(name: str) -> str:
    for fragment, label in OP_CLASSES.items():
        if fragment in name:
            return label
    return "other element-wise"


def profile_breakdown(module, hidden, inputs, device) -> dict:
    """Self time per operator class and the top operators (one profiled forward)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.inference_mode():
        module(hidden, inputs)
        bu.synchronize(device)
        with profile(activities=activities) as prof:
            module(hidden, inputs)
            bu.synchronize(device)
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


def timed(fn, device) -> float:
    bu.synchronize(device)
    start = time.perf_counter()
    fn()
    bu.synchronize(device)
    return time.perf_counter() - start


SUBMODULES = {"expand": ("input_norm", "expand_in", "expand_out"), "cross_attention": ("cross_attention",),
              "self_attention": ("self_attention",), "output": ("output_norm", "output_proj")}
# time spans inside one forward: the per-layer work on the whole feature map (LayerNorm + K/V projections of every
# cell), the rest of the cross-attention (queries, window gather, attention, output projection), the self-attention
SPANS = {"feature_kv": ("cross_attention.feature_norm", "cross_attention.k_proj", "cross_attention.v_proj"),
         "cross_attention": ("cross_attention",), "self_attention": ("self_attention",)}


def attach_spans(module, marks: bu.Marks) -> list:
    handles = []
    for span, names in SPANS.items():
        for name in names:
            try:
                sub = module.get_submodule(name)
            except AttributeError:
                continue
            handles.append(sub.register_forward_pre_hook(lambda m, a: marks.start(m)))
            handles.append(sub.register_forward_hook(lambda m, a, o, span=span: marks.stop(m, span)))
    return handles


def instrument_case(config, module, tiles, hidden, inputs, device, dtype) -> dict:
    """Untimed passes of one case: FLOPs (per part), dispatched ops and shapes, peak memory."""
    with torch.inference_mode():
        with bu.flop_counter() as counter, OpRecorder() as recorder:
            module(hidden, inputs)
        cross = OpRecorder()
        with cross:
            module.cross_attention(torch.zeros(inputs.positions.numel(), module.expand_out.out_features,
                                               device=device, dtype=dtype), inputs)
        with bu.PeakMemory(device) as memory:
            module(hidden, inputs)
    per_module = bu.module_flops(counter)
    flops = per_module.get("Global", 0)
    sub_flops = {
        part: sum(v for k, v in per_module.items() if any(k == f"VisionRemember.{name}" for name in names))
        for part, names in SUBMODULES.items()
    }
    kv_flops = sum(v for k, v in per_module.items() if k in {f"VisionRemember.{n}" for n in SPANS["feature_kv"]})
    kernels = {k: v for k, v in cross.ops.items() if "attention" in k or k in ("bmm", "baddbmm", "_softmax")}
    gather_ops = {k: v for k, v in cross.ops.items() if k in ("index", "gather", "index_select", "take", "embedding")}
    cells = config.patch_grid_size**2
    # an attention score tensor over a whole tile's feature map: a (cells x cells) trailing block
    square = sorted({s for _, s in cross.shapes if len(s) >= 2 and s[-1] == s[-2] == cells})
    score_elements = sum(math.prod(c["q"][:-1]) * c["k"][-2] for c in cross.attention_calls if "k" in c)
    return {
        "tiles": tiles,
        "tokens": tiles * config.num_image_tokens_per_tile,
        "feature_cells": tiles * cells,
        "peak_extra_mib": memory.extra_mib,
        "gflop": flops / 1e9,
        "gflop_by_part": {k: v / 1e9 for k, v in sub_flops.items()},
        "gflop_feature_kv": kv_flops / 1e9,
        "dispatched_ops": sum(recorder.ops.values()),
        "cross_attention_ops": sum(cross.ops.values()),
        "cross_attention_calls": cross.attention_calls,
        "cross_attention_heads": config.vision_remember_num_heads_resolved,
        "cross_attention_kernels": kernels,
        "cross_attention_gather_ops": gather_ops,
        "cross_attention_score_elements_per_tile": score_elements / tiles,
        "cross_attention_cells_x_cells_tensors": [list(s) for s in square],
        "cross_attention_largest": [{"op": n, "shape": list(s), "mib": b / 2**20} for b, n, s in cross.largest[:3]],
        "largest_intermediates": [{"op": n, "shape": list(s), "mib": b / 2**20} for b, n, s in recorder.largest[:5]],
    }


def summarise(row: dict, forward_s: list, build_s: list, spans: list, limit_gflops: float):
    ms = bu.median(forward_s) * 1e3
    parts = {key: bu.median([s.get(key, 0.0) for s in spans]) for key in SPANS}
    gflops_s = row["gflop"] / (ms / 1e3) if ms else None
    row.update(
        forward_ms=ms,
        forward_ms_min=min(forward_s) * 1e3,
        forward_ms_runs=[t * 1e3 for t in forward_s],
        build_ms=bu.median(build_s) * 1e3,
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=["auto", *bu.DTYPES], default="auto")
    parser.add_argument("--interactions", nargs="+", choices=INTERACTIONS, default=list(INTERACTIONS))
    parser.add_argument("--tiles", nargs="+", type=int, default=None)
    parser.add_argument("--text-hidden", nargs="+", type=int, default=None, help="LLM widths (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-profile", action="store_true", help="skip the per-operator time breakdown")
    parser.add_argument("--output-dir", type=Path, default=bu.REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--tag", default=None)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Runs the benchmark; returns the payload written to the JSON file. Restores torch's thread count."""
    threads_before = torch.get_num_threads()
    try:
        return _run(parse_args(argv), argv)
    finally:
        torch.set_num_threads(threads_before)


def _run(args, argv) -> dict:
    preset = PRESETS[args.preset]
    device = bu.resolve_device(args.device)
    if args.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else bu.DTYPES[preset["cpu_dtype"]]
    else:
        dtype = bu.DTYPES[args.dtype]
    # tiny ops gain nothing from a second thread, and on a busy machine OpenMP barriers make them 100x slower
    threads = args.threads or preset.get("threads") or bu.available_cores()
    torch.set_num_threads(threads)
    repeats = args.repeats or preset["repeats"]
    warmup = args.warmup if args.warmup is not None else preset["warmup"]
    tiles_list = args.tiles or preset["tiles"]
    widths = args.text_hidden or preset["text_hidden"]

    with torch.inference_mode():
        peak = bu.matmul_peak_gflops(device, dtype, preset["matmul_sizes"])
    n = peak["size"]
    mat_a = torch.randn(n, n, device=device, dtype=dtype)
    mat_b = torch.randn(n, n, device=device, dtype=dtype)
    meta = {
        "benchmark": "benchmark_vision_remember",
        "preset": args.preset,
        "dtype": str(dtype).removeprefix("torch."),
        "repeats": repeats,
        "warmup": warmup,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/benchmark_vision_remember.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": bu.machine_info(device, threads),
        "matmul_probe": peak,
        "memory_method": bu.PeakMemory.describe(device),
        "flops_method": "torch.utils.flop_counter.FlopCounterMode (+ CPU fused SDPA); matmul/attention only",
        "protocol": "per case one instrumented pass (FLOPs, ops, memory) and `warmup` forwards; then `repeats` rounds "
                    "over all cases in a shuffled order, each round also timing one plain n x n matmul (the limit is "
                    "its median GFLOP/s over the rounds, measured interleaved with the cases)",
        "setup": {"vision_hidden": preset["vision_hidden"], "levels": 3, "heads": preset["vision_heads"],
                  "feature_grid": preset["image_size"] // preset["patch_size"], "text_tokens": TEXT_TOKENS},
    }
    print(f"# Vision Remember micro-benchmark: preset={args.preset} device={device} dtype={meta['dtype']} "
          f"threads={threads}; plain matmul probe {peak['gflops']:.0f} GFLOP/s (n={n})", flush=True)

    # 1) modules, inputs and the instrumented pass of every case
    cases = []
    for width in widths:
        inputs_by_tiles = {}
        for interaction in args.interactions:
            config = build_config(preset, width, interaction)
            module = build_module(config, device, dtype)
            for tiles in tiles_list:
                if tiles not in inputs_by_tiles:
                    hidden, build_args = synthetic_inputs(config, tiles, device, dtype)
                    with torch.inference_mode():
                        inputs_by_tiles[tiles] = (hidden, build_args, VisionRememberInputs.build(*build_args))
                hidden, build_args, inputs = inputs_by_tiles[tiles]
                row = instrument_case(config, module, tiles, hidden, inputs, device, dtype)
                row.update(text_hidden=width, interaction=interaction)
                with torch.inference_mode():
                    for _ in range(warmup):
                        module(hidden, inputs)
                cases.append((row, module, hidden, build_args, inputs))
    print(f"  {len(cases)} cases instrumented; timing {repeats} interleaved rounds", flush=True)

    # 2) interleaved timed rounds (+ one plain matmul per round: the contemporaneous arithmetic limit)
    forward_s = [[] for _ in cases]
    build_s = [[] for _ in cases]
    spans = [[] for _ in cases]
    matmul_gflops = []
    order = list(range(len(cases)))
    with torch.inference_mode():
        for round_index in range(repeats):
            random.Random(round_index).shuffle(order)
            matmul_gflops.append(2 * n**3 / timed(lambda: mat_a @ mat_b, device) / 1e9)
            for i in order:
                row, module, hidden, build_args, inputs = cases[i]
                marks = bu.Marks(device)
                handles = attach_spans(module, marks)
                try:
                    forward_s[i].append(timed(lambda: module(hidden, inputs), device))
                finally:
                    for handle in handles:
                        handle.remove()
                spans[i].append(marks.totals_ms())
                build_s[i].append(timed(lambda: VisionRememberInputs.build(*build_args), device))
    limit = bu.median(matmul_gflops)
    meta["matmul_limit_gflops"] = limit
    meta["matmul_limit_runs"] = matmul_gflops
    del mat_a, mat_b

    rows = []
    for i, (row, module, hidden, build_args, inputs) in enumerate(cases):
        summarise(row, forward_s[i], build_s[i], spans[i], limit)
        rows.append(row)
        print(f"  D={row['text_hidden']:5d} {row['interaction']:10s} tiles={row['tiles']:3d} tokens={row['tokens']:5d} "
              f"VR={row['forward_ms']:8.2f} ms build={row['build_ms']:6.2f} ms GFLOP={row['gflop']:7.2f} "
              f"{row['achieved_gflops']:7.1f} GFLOP/s ({row['pct_of_matmul']:5.1f}% of matmul, "
              f"limit {row['limit_ms']:.2f} ms) peak+={bu.fmt(row['peak_extra_mib'], '.0f')} MiB ops={row['dispatched_ops']}",
              flush=True)
    if not args.no_profile:  # per-operator breakdown of the largest case of each (width, interaction)
        largest = {}
        for i, case in enumerate(cases):
            key = (case[0]["text_hidden"], case[0]["interaction"])
            if key not in largest or case[0]["tiles"] > cases[largest[key]][0]["tiles"]:
                largest[key] = i
        for i in largest.values():
            row, module, hidden, build_args, inputs = cases[i]
            row["profile"] = profile_breakdown(module, hidden, inputs, device)
    del cases

    checks = structural_checks(rows)
    payload = {"meta": meta, "checks": checks, "results": rows}
    stem = args.tag or f"vision_remember_{args.preset}_{device.type}"
    out_dir = Path(args.output_dir)
    meta["loadavg_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    bu.write_json(out_dir / f"{stem}.json", payload)
    bu.write_csv(out_dir / f"{stem}.csv", rows)
    plot(rows, out_dir / f"{stem}.png", meta)

    print()
    print(results_table(rows))
    print()
    print(profile_table(rows))
    print("\nChecks:")
    for line in checks["lines"]:
        print("  - " + line)
    print(f"\nwrote {out_dir / stem}.json, .csv, .png")
    return payload


def structural_checks(rows: list[dict]) -> dict:
    lines, ok = [], True
    for (width, interaction) in dict.fromkeys((r["text_hidden"], r["interaction"]) for r in rows):
        group = [r for r in rows if r["text_hidden"] == width and r["interaction"] == interaction]
        counts = sorted({r["dispatched_ops"] for r in group})
        constant = len(counts) == 1
        ok &= constant
        lines.append(f"D={width} {interaction}: dispatched ops per VR forward {counts} over tiles "
                     f"{[r['tiles'] for r in group]} -> "
                     f"{'constant (no per-tile/window loop)' if constant else 'GROWS'}")
        r = group[-1]
        calls = r["cross_attention_calls"]
        shapes = ", ".join(f"{c['op']} q{list(c.get('q', []))} k{list(c.get('k', []))}" for c in calls)
        line = (f"D={width} {interaction} cross-attention ({r['tiles']} tiles): "
                f"{len(calls)} attention call(s) [{shapes}], "
                f"kernels {r['cross_attention_kernels']}, gather ops {r['cross_attention_gather_ops']}, "
                f"score elements per tile {r['cross_attention_score_elements_per_tile']:,.0f} "
                f"(all heads; one cells x cells map per tile would be "
                f"{r['cross_attention_heads'] * (r['feature_cells'] // r['tiles']) ** 2:,})")
        if interaction == "sela":
            one_sdpa = len(calls) == 1 and not {"bmm", "baddbmm", "_softmax"} & set(r["cross_attention_kernels"])
            one_sdpa = one_sdpa and sum(r["cross_attention_gather_ops"].values()) <= 2
            no_square = not r["cross_attention_cells_x_cells_tensors"]
            ok &= one_sdpa and no_square
            line += (f"; one fused SDPA: {'yes' if one_sdpa else 'NO'}; cells x cells tensors: "
                     f"{r['cross_attention_cells_x_cells_tensors'] or 'none'}; largest cross-attention tensor "
                     f"{r['cross_attention_largest'][0]['shape']}")
        lines.append(line)
    return {"all_ok": ok, "lines": lines}


def results_table(rows: list[dict]) -> str:
    headers = ["D", "interaction", "tiles", "tokens", "VR ms", "build ms", "GFLOP", "GFLOP/s", "% of matmul",
               "limit ms", "peak MiB", "ops"]
    body = [[r["text_hidden"], r["interaction"], r["tiles"], r["tokens"], bu.fmt(r["forward_ms"], ".2f"),
             bu.fmt(r["build_ms"], ".2f"), bu.fmt(r["gflop"], ".2f"), bu.fmt(r["achieved_gflops"], ".0f"),
             bu.fmt(r["pct_of_matmul"], ".0f", "%"), bu.fmt(r["limit_ms"], ".2f"), bu.fmt(r["peak_extra_mib"], ".0f"),
             r["dispatched_ops"]] for r in rows]
    return bu.markdown_table(headers, body)


def profile_table(rows: list[dict]) -> str:
    classes = ["matmul", "attention (SDPA)", "gather/scatter", "norm", "copy/cast", "other element-wise"]
    headers = ["D", "interaction", "tiles"] + [f"{c} %" for c in classes] + ["top op"]
    body = []
    for r in rows:
        if "profile" not in r:
            continue
        pct = r["profile"]["by_class_pct"]
        top = r["profile"]["top_ops"][0]
        body.append([r["text_hidden"], r["interaction"], r["tiles"], *[bu.fmt(pct.get(c, 0.0), ".0f") for c in classes],
                     f"{top['op']} ({top['pct']:.0f}%)"])
    return "Time by operator class (profiler self time, largest case):\n\n" + bu.markdown_table(headers, body)


def plot(rows: list[dict], path: Path, meta: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for (width, interaction) in dict.fromkeys((r["text_hidden"], r["interaction"]) for r in rows):
        group = sorted((r for r in rows if r["text_hidden"] == width and r["interaction"] == interaction),
                       key=lambda r: r["tokens"])
        xs = [r["tokens"] for r in group]
        label = f"{interaction} D={width}"
        left.plot(xs, [r["forward_ms"] for r in group], marker="o", label=label)
        right.plot(xs, [r["pct_of_matmul"] for r in group], marker="o", label=label)
    limit = meta["matmul_limit_gflops"]
    left.set(xlabel="vision tokens (144 per tile)", ylabel="one VR forward (ms, median)", xscale="log", yscale="log",
             title=f"Vision Remember, {meta['dtype']}, {meta['machine'].get('gpu', meta['machine']['cpu'])}")
    right.set(xlabel="vision tokens", ylabel="achieved GFLOP/s as % of plain matmul", xscale="log",
              title=f"arithmetic efficiency (matmul = {limit:.0f} GFLOP/s)")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
