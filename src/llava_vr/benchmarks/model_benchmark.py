# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""End-to-end LLaVA-VR efficiency benchmark: projector / Vision Remember variants side by side in one process.

Every variant is built from a config with random weights; the variants differ only in `projector_type` and the
Vision Remember (VR) settings, named `PROJECTOR[+INTERACTION[:w<N>][:v1][:plain|:absorbed]]` (VR width, no token
self-attention, cross-attention formulation; `model_variants.parse_variant`). For each variant and each AnyRes crop
count it measures, on one image plus a short text prompt (batch 1):

- TTFT: one prefill `model(input_ids, pixel_values, image_sizes, use_cache=True, logits_to_keep=1)` (vision tower,
  saliency, projector, packing, VR, LLM, LM head of the last position) plus the greedy argmax; median of `--repeats`
  runs after warm-up, with a breakdown (vision encode = `get_image_features`, VR inputs build, VR modules, LLM rest);
- decode tokens/s: `--decode-tokens` greedy single-token forwards on the prefill's KV cache (VR is a no-op there);
- peak memory of the prefill (see `memory.PeakMemory` for the CPU and CUDA methods);
- image tokens in the prompt and the prefill sequence length;
- prefill FLOPs (`FlopCounterMode`), total and per component (`--repeats 0`: only these, the op and call counts and
  the memory, nothing timed);
- VR's share of the prefill FLOPs and of its time (VR modules + their inputs' build), and which formulation VR ran.

"tiles" in the output: `crops` = AnyRes crops of the image (1 = 1x1, 4 = 2x2, 9 = 3x3, 336-px crops for CLIP-336);
the tower encodes `tower_tiles = crops + 1` tiles (the base whole-image tile first). Ratios are against
`adaptive_avg_pool` without VR (`x_pool`, the paper's "144 tokens" row), against `mlp` (`mlp_speedup` = TTFT(mlp) /
TTFT(variant), the paper's "1.60x"), and against the same projector without VR (`x_proj`). Presets at real widths
also print the efficiency targets (`model_targets.TARGETS`) and every VR variant against its `:plain` twin and its
default-width twin.
Writes `<stem>.json`, `<stem>.csv` and `<stem>.png` (stem `llava_vr_<preset>_<device>` unless `--tag`) to
`--output-dir` (default `benchmark_results/`; the plot needs matplotlib, the `bench` extra).

Examples:
    llava-vr bench model --preset tiny
    llava-vr bench model --preset cpu-small
    llava-vr bench model --preset qwen2-1.5b --device cuda --attn sdpa
"""

import argparse
import gc
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .machine import (
    DTYPES,
    dtype_name,
    loadavg,
    machine_info,
    run_benchmark,
)
from .memory import PeakMemory, process_peak_rss_gib
from .model_probes import instrumented_run, timed_run
from .model_report import plot, print_report
from .model_results import (
    add_flat_columns,
    add_ratios,
    formulation_used,
    full_depth_estimate,
    shared_layer_times,
    summarise,
    vr_shares,
)
from .model_variants import (
    PRESETS,
    VARIANTS,
    build_config,
    build_model,
    config_summary,
    make_inputs,
    share_weights,
    variant_argument,
    variant_fields,
    variant_order,
)
from .reporting import (
    DEFAULT_OUTPUT_DIR,
    MATPLOTLIB_MISSING,
    fmt,
    plotting_available,
    utc_timestamp,
    write_csv,
    write_json,
)

PROG = "python benchmarks/benchmark_llava_vr.py"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (cuda when available)")
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                        help="auto: bfloat16 on CUDA, the preset's CPU dtype on CPU")
    parser.add_argument("--attn", choices=["sdpa", "flash_attention_2", "eager"], default="sdpa")
    parser.add_argument("--variants", nargs="+", type=variant_argument, default=None, metavar="VARIANT",
                        help="PROJECTOR[+INTERACTION[:w<N>][:v1][:plain|:absorbed]] (VR width N, no token "
                             "self-attention, formulation) or `all`; default: at real widths (cpu-small, qwen2-*) "
                             f"{', '.join(PRESETS['cpu-small']['variants'])}; tiny: all {len(VARIANTS)} named ones "
                             f"({', '.join(VARIANTS)})")
    parser.add_argument("--crops", "--tiles", nargs="+", type=int, default=[1, 4, 9], dest="crops",
                        help="AnyRes crops per image (the tower encodes crops + 1 tiles)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds (0: the instrumented prefill only: FLOPs, op counts, memory; no timing)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up prefills besides the FLOP-count one")
    parser.add_argument("--decode-tokens", type=int, default=None)
    parser.add_argument("--text-tokens", type=int, default=32, help="text tokens around the image")
    parser.add_argument("--vision-layers", type=int, default=None,
                        help="override the tower depth (the results add an estimate at the preset's depth)")
    parser.add_argument("--text-layers", type=int, default=None,
                        help="override the decoder depth (>= 5 with VR at layers 1 and 4)")
    parser.add_argument("--no-flops", action="store_true", help="skip the FlopCounterMode pass")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: available cores; 1 for tiny)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                        help=f"where the results go (default: {DEFAULT_OUTPUT_DIR}/ in the working directory)")
    parser.add_argument("--tag", default=None, help="file name stem (default: llava_vr_<preset>_<device>)")
    return parser


@dataclass
class Plan:
    """What one run measures, from the arguments and the preset's defaults."""

    repeats: int
    warmup: int
    decode_tokens: int
    variants: list[str]  # canonical names in `variant_order`, so that the baselines come first
    reference_depth: dict | None  # depths of the full-depth estimate, None without one

    @classmethod
    def from_args(cls, args, preset: dict) -> "Plan":
        variants = args.variants or preset.get("variants") or list(VARIANTS)
        if "all" in variants:
            variants = [*VARIANTS, *(v for v in variants if v != "all")]
        reference_depth = preset["reference_depth"]
        if args.vision_layers or args.text_layers:  # cut depths: estimate the preset's own full depth
            full = {"vision": preset["vision"]["num_hidden_layers"], "text": preset["text"]["num_hidden_layers"]}
            cut = {"vision": args.vision_layers or full["vision"], "text": args.text_layers or full["text"]}
            reference_depth = None if cut == full else full
        repeats = args.repeats if args.repeats is not None else preset["repeats"]
        return cls(
            repeats=repeats,
            warmup=0 if repeats == 0 else args.warmup if args.warmup is not None else preset["warmup"],
            decode_tokens=args.decode_tokens if args.decode_tokens is not None else preset["decode_tokens"],
            variants=sorted(set(variants), key=variant_order),
            reference_depth=reference_depth,
        )


def run(argv: list[str] | None = None, prog: str = PROG) -> dict:
    """Runs the benchmark; returns the payload written to the JSON file. Restores torch's thread count."""
    return run_benchmark(build_parser(prog), PRESETS, _run, argv, prog)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    run(argv, prog)
    return 0


def _run(args, preset: dict, device, dtype, threads: int, command: str) -> dict:
    plan = Plan.from_args(args, preset)
    meta = _meta(args, plan, device, dtype, threads, command)
    stem = args.tag or f"llava_vr_{args.preset}_{device.type}"
    out_dir = Path(args.output_dir)
    print(f"# LLaVA-VR benchmark: preset={args.preset} device={device} dtype={meta['dtype']} attn={args.attn} "
          f"threads={threads} ({meta['machine'].get('gpu', meta['machine']['cpu'])})", flush=True)
    print(f"  plan: {len(plan.variants)} variants x {len(args.crops)} crop counts = "
          f"{len(plan.variants) * len(args.crops)} cases; per case one instrumented prefill "
          f"({'FLOPs, ' if not args.no_flops else ''}memory) and {plan.warmup} warm-up, then {plan.repeats} timed "
          f"rounds of a prefill + {plan.decode_tokens} decode steps; results to {out_dir / stem}.*", flush=True)
    plots = plotting_available()
    if not plots:
        print(f"  {MATPLOTLIB_MISSING}", flush=True)
    models, configs = _build_models(args, preset, plan.variants, device, dtype)
    meta["config"] = config_summary(configs[plan.variants[0]])
    cases, rows = _instrument_cases(args, plan, models, configs, device, dtype)
    runs = _timed_rounds(cases, models, plan, args.seed, device)
    del cases, models
    gc.collect()
    rows = _summarise_rows(rows, runs, configs, plan)

    meta["process_peak_rss_gib"] = process_peak_rss_gib()
    payload = {"meta": meta, "results": rows}
    meta["loadavg_at_end"] = loadavg()
    write_json(out_dir / f"{stem}.json", payload)
    write_csv(out_dir / f"{stem}.csv", rows)
    print_report(rows, plan.reference_depth, preset.get("targets", False))
    no_plot = f" (no plot: {MATPLOTLIB_MISSING})" if not plots else ""
    no_plot = no_plot or (" (no plot: nothing timed)" if not plan.repeats else "")
    if not no_plot:
        plot(rows, out_dir / f"{stem}.png", f"LLaVA-VR TTFT, {args.preset}, {meta['machine'].get('gpu', 'CPU')}, "
                                            f"{meta['dtype']}")
    print(f"\nwrote {out_dir / stem}.json, .csv" + (no_plot or ", .png"))
    return payload


def _meta(args, plan: Plan, device, dtype, threads: int, command: str) -> dict:
    return {
        "benchmark": "benchmark_llava_vr",
        "preset": args.preset,
        "dtype": dtype_name(dtype),
        "attn_implementation": args.attn,
        "repeats": plan.repeats,
        "warmup": plan.warmup,
        "decode_tokens": plan.decode_tokens,
        "text_tokens": args.text_tokens,
        "crops": args.crops,
        "timestamp": utc_timestamp(),
        "command": command,
        "machine": machine_info(device, threads),
        "memory_method": PeakMemory.describe(device),
        "flops_method": "torch.utils.flop_counter.FlopCounterMode (+ CPU fused SDPA); matmul/conv/attention only",
        "ttft_method": "median wall time of model(..., use_cache=True, logits_to_keep=1) + argmax, synchronised",
        "decode_method": "greedy single-token forwards on the prefill KV cache; tokens / median wall time",
        "reference_depth": plan.reference_depth,
        "full_depth_estimate_method": "TTFT with the tower and decoder-layer times replaced by their medians over the "
                                      "variants at the same crop count / image tokens (identical computations), "
                                      "scaled to the reference depth; VR, its input build, projector and the rest as "
                                      "measured per variant; FLOPs exact (tower and decoder layers counted, scaled)",
        "protocol": "variants share one copy of the tower/LLM/head weights; per case one instrumented prefill (FLOPs, "
                    "call counts, memory; also the warm-up) and `warmup` more, then `repeats` rounds over all cases "
                    "in a shuffled order per round (interleaved); medians over the rounds",
    }


def _build_models(args, preset: dict, variants: list[str], device, dtype) -> tuple[dict, dict]:
    """Every variant's model and config; the first variant's tower / LLM / head are shared by all the others."""
    models, configs, base = {}, {}, None
    for variant in variants:
        config = build_config(preset, variant, args.attn, args.vision_layers, args.text_layers)
        start = time.perf_counter()
        model = build_model(config, device, dtype, args.seed)
        if base is None:
            base = model
        else:
            share_weights(model, base)
            if device.type == "cuda" or sum(p.numel() for p in base.parameters()) > 10_000_000:
                gc.collect()  # the variant's own copies of the shared modules (seconds with Transformers' graph)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        models[variant], configs[variant] = model, config
        print(f"  built {variant} in {time.perf_counter() - start:.1f} s", flush=True)
    return models, configs


def _instrument_cases(args, plan: Plan, models: dict, configs: dict, device, dtype) -> tuple[list, dict]:
    """Per (variant, crops): inputs, the instrumented first prefill (FLOPs, memory; warm-up) and `warmup` more.
    Returns the cases `(variant, crops, inputs)` and their rows by `(variant, crops)`."""
    cases, rows = [], {}
    keys = [(variant, crops) for variant in plan.variants for crops in args.crops]
    progress = tqdm(keys, desc="instrumented prefills" + (" (FLOP count)" if not args.no_flops else ""), unit="case")
    for variant, crops in progress:
        progress.set_postfix_str(f"{variant} crops={crops}")
        model = models[variant]
        inputs, layout = make_inputs(model, crops, args.text_tokens, device, dtype, args.seed)
        row = {
            "variant": variant,
            **variant_fields(variant, configs[variant]),
            "crops": crops,
            "tower_tiles": layout.num_tiles,
            "image_tokens": layout.num_tokens,
            "seq_len": int(inputs["input_ids"].shape[1]),
        }
        row.update(instrumented_run(model, inputs, device, not args.no_flops))
        row["vr_formulation_used"] = formulation_used(row["calls_per_prefill"])
        for _ in range(plan.warmup):
            timed_run(model, inputs, device, min(plan.decode_tokens, 2))
        cases.append((variant, crops, inputs))
        rows[variant, crops] = row
    return cases, rows


def _timed_rounds(cases: list, models: dict, plan: Plan, seed: int, device) -> dict:
    """`repeats` rounds, each timing every case once in a shuffled order: background load and drift hit all variants
    alike, which keeps the ratios stable on a shared machine. Timed runs by `(variant, crops)`."""
    runs = {(variant, crops): [] for variant, crops, _ in cases}
    order = list(range(len(cases)))
    with tqdm(total=plan.repeats * len(cases), desc=f"timed rounds ({plan.repeats}, interleaved)", unit="run") as bar:
        for round_index in range(plan.repeats):
            random.Random(seed + round_index).shuffle(order)
            for i in order:
                variant, crops, inputs = cases[i]
                runs[variant, crops].append(timed_run(models[variant], inputs, device, plan.decode_tokens))
                bar.update()
    return runs


def _summarise_rows(rows: dict, runs: dict, configs: dict, plan: Plan) -> list[dict]:
    """Medians, VR shares, full-depth estimate, ratios and flat CSV columns of every row (printed as they are done)."""
    for key, row in rows.items():
        row.update(summarise(runs[key], plan.decode_tokens))
        flops = row.get("flops", {})
        row.update(vr_shares(row.get("ttft_ms"), row.get("vr_ms"), flops.get("vr"), flops.get("total")))
    shared = shared_layer_times(list(rows.values()))
    for key, row in rows.items():
        estimate = full_depth_estimate(row, configs[key[0]], plan.reference_depth, shared)
        if estimate:
            row["full_depth_estimate"] = estimate
        _print_row(row)
    rows = list(rows.values())
    add_ratios(rows, "ttft_ms")
    add_ratios(rows, "ttft_ms", "full_depth_estimate")
    add_ratios(rows, "gflops", "full_depth_estimate", prefix="gflops_")
    for row in rows:
        add_flat_columns(row)
    return rows


def _print_row(row: dict):
    line = f"  {row['variant']:38s} crops={row['crops']} tokens={row['image_tokens']:5d}"
    if "ttft_ms" in row:
        parts = row["breakdown_ms"]
        line += (f" TTFT={row['ttft_ms']:9.1f} ms (vision {parts['vision']:.1f}, VR {row['vr_ms']:.1f}) "
                 f"decode={row.get('decode_tok_s', 0):6.1f} tok/s")
    line += f" peak+={fmt(row['peak_extra_mib'], '.0f')} MiB"
    if "flops" in row:
        line += f" GFLOP={row['flops']['total'] / 1e9:.1f} (VR {row['flops']['vr'] / 1e9:.1f})"
    print(line + (f" formulation={row['vr_formulation_used']}" if row.get("vr_formulation_used") else ""), flush=True)


__all__ = ["PROG", "Plan", "build_parser", "main", "run"]
