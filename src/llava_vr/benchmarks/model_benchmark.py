# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""`llava-vr bench model`: the whole model, projector / Vision Remember variants side by side in one process.

Every variant is built from a config with random weights (`model_variants`: names `PROJECTOR[+INTERACTION[:w<N>][:v1]
[:plain|:absorbed]]`, presets); the variants share one copy of the tower, decoder and head weights. For each variant and
AnyRes crop count (`crops`; the tower encodes `crops + 1` tiles), on one image plus a short text prompt (batch 1):

- TTFT: one prefill `model(..., use_cache=True, logits_to_keep=1)` plus the greedy argmax, median of `--repeats`
  interleaved rounds, with its parts (vision = `get_image_features`, VR inputs build, VR modules, LLM rest);
- decode tokens/s: `--decode-tokens` greedy single-token forwards on the prefill's KV cache;
- from one instrumented prefill (`--repeats 0`: only this): peak memory (`memory.PeakMemory`), FLOPs per component
  (`FlopCounterMode`), aten ops, how often each part ran and which cross-attention formulation VR ran;
- VR's share of the FLOPs and of the time; ratios against `adaptive_avg_pool` alone (`x_pool`), `mlp`
  (`mlp_speedup`) and the same projector without VR (`x_proj`); for cut depths a full-depth estimate.

Presets at real widths also print every VR variant against its `:plain` and default-width twins and the efficiency
`TARGETS`. Writes `<stem>.json`, `.csv`, `.png` (stem `llava_vr_<preset>_<device>` unless `--tag`) to `--output-dir`;
the method in full: `benchmarks/README.md`.

Examples:
    llava-vr bench model --preset tiny
    llava-vr bench model --preset cpu-small
    llava-vr bench model --preset qwen2-1.5b --device cuda --attn sdpa
"""

import gc
import re
import time
from collections.abc import Callable, Collection
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
from tqdm.auto import tqdm

from llava_vr import LlavaVRConfig
from llava_vr.compat_llava_vr import GENERATION_CACHE, OUTPUT_CACHE
from llava_vr.registries_llava_vr import VR_INTERACTIONS
from llava_vr.vision_remember_llava_vr import VisionRememberInputs

from .cli import benchmark_parser, run_benchmark
from .flops import OpCounter, flop_counter, module_flops
from .machine import loadavg
from .memory import PeakMemory, process_peak_rss_gib
from .model_variants import (
    MLP,
    POOL,
    PRESETS,
    VARIANTS,
    VR_MAIN,
    VR_V1,
    build_config,
    build_model,
    config_summary,
    make_inputs,
    parse_variant,
    share_weights,
    variant_argument,
    variant_fields,
    variant_order,
)
from .reporting import fmt, markdown_table, plotting_available, pyplot, result_meta, save_figure, write_results
from .timing import Marks, around_forward, interleaved_rounds, median, timed

PROG = "llava-vr bench model"


def build_parser(prog: str = PROG):
    parser = benchmark_parser(
        prog,
        __doc__,
        PRESETS,
        "llava_vr_<preset>_<device>",
        repeats_help="timed rounds (0: the instrumented prefill only: FLOPs, op counts, memory; no timing)",
    )
    parser.add_argument("--attn", choices=["sdpa", "flash_attention_2", "eager"], default="sdpa")
    parser.add_argument(
        "--variants",
        nargs="+",
        type=variant_argument,
        default=None,
        metavar="VARIANT",
        help="PROJECTOR[+INTERACTION[:w<N>][:v1][:plain|:absorbed]] (VR width N, no token "
        "self-attention, formulation) or `all`; default: at real widths (cpu-small, qwen2-*) "
        f"{', '.join(PRESETS['cpu-small']['variants'])}; tiny: all {len(VARIANTS)} named ones "
        f"({', '.join(VARIANTS)})",
    )
    parser.add_argument(
        "--crops",
        "--tiles",
        nargs="+",
        type=int,
        default=[1, 4, 9],
        dest="crops",
        help="AnyRes crops per image (the tower encodes crops + 1 tiles)",
    )
    parser.add_argument("--warmup", type=int, default=None, help="warm-up prefills besides the FLOP-count one")
    parser.add_argument("--decode-tokens", type=int, default=None)
    parser.add_argument("--text-tokens", type=int, default=32, help="text tokens around the image")
    parser.add_argument(
        "--vision-layers",
        type=int,
        default=None,
        help="override the tower depth (the results add an estimate at the preset's depth)",
    )
    parser.add_argument(
        "--text-layers", type=int, default=None, help="override the decoder depth (>= 5 with VR at layers 1 and 4)"
    )
    parser.add_argument("--no-flops", action="store_true", help="skip the FlopCounterMode pass")
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


def _run(args, preset: dict, device, dtype, threads: int, command: str) -> dict:
    plan = Plan.from_args(args, preset)
    meta = _meta(args, plan, device, dtype, threads, command)
    stem = args.tag or f"llava_vr_{args.preset}_{device.type}"
    print(
        f"# LLaVA-VR benchmark: preset={args.preset} device={device} dtype={meta['dtype']} attn={args.attn} "
        f"threads={threads} ({meta['machine'].get('gpu', meta['machine']['cpu'])})",
        flush=True,
    )
    print(
        f"  plan: {len(plan.variants)} variants x {len(args.crops)} crop counts = "
        f"{len(plan.variants) * len(args.crops)} cases; per case one instrumented prefill "
        f"({'FLOPs, ' if not args.no_flops else ''}memory) and {plan.warmup} warm-up, then {plan.repeats} timed "
        f"rounds of a prefill + {plan.decode_tokens} decode steps; results to {args.output_dir / stem}.*",
        flush=True,
    )
    plotting_available(say_so=True)
    models, configs = _build_models(args, preset, plan.variants, device, dtype)
    meta["config"] = config_summary(configs[plan.variants[0]])
    cases, rows = _instrument_cases(args, plan, models, configs, device, dtype)
    runs = _timed_rounds(cases, models, plan, args.seed, device)
    del cases, models
    gc.collect()
    rows = _summarise_rows(rows, runs, configs, plan)
    meta.update(process_peak_rss_gib=process_peak_rss_gib(), loadavg_at_end=loadavg())
    payload = {"meta": meta, "results": rows}
    print_report(rows, plan.reference_depth, preset.get("targets", False))
    title = f"LLaVA-VR TTFT, {args.preset}, {meta['machine'].get('gpu', 'CPU')}, {meta['dtype']}"
    write_results(
        args.output_dir,
        stem,
        payload,
        rows,
        lambda path: plot(rows, path, title),
        no_plot=None if plan.repeats else "nothing timed",
    )
    return payload


def _meta(args, plan: Plan, device, dtype, threads: int, command: str) -> dict:
    return result_meta(
        "benchmark_llava_vr",
        args.preset,
        dtype,
        device,
        threads,
        command,
        attn_implementation=args.attn,
        repeats=plan.repeats,
        warmup=plan.warmup,
        decode_tokens=plan.decode_tokens,
        text_tokens=args.text_tokens,
        crops=args.crops,
    ) | {
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
    """`repeats` interleaved rounds, each timing every case once in a shuffled order. Timed runs by
    `(variant, crops)`."""
    runs = {(variant, crops): [] for variant, crops, _ in cases}
    with tqdm(total=plan.repeats * len(cases), desc=f"timed rounds ({plan.repeats}, interleaved)", unit="run") as bar:
        for order in interleaved_rounds(len(cases), plan.repeats, seed):
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
        line += (
            f" TTFT={row['ttft_ms']:9.1f} ms (vision {parts['vision']:.1f}, VR {row['vr_ms']:.1f}) "
            f"decode={row.get('decode_tok_s', 0):6.1f} tok/s"
        )
    line += f" peak+={fmt(row['peak_extra_mib'], '.0f')} MiB"
    if "flops" in row:
        line += f" GFLOP={row['flops']['total'] / 1e9:.1f} (VR {row['flops']['vr'] / 1e9:.1f})"
    print(line + (f" formulation={row['vr_formulation_used']}" if row.get("vr_formulation_used") else ""), flush=True)


# ---- one prefill, timed with its parts or instrumented ----
TIMED_PARTS = ("vision", "tower", "projector", "vr_build", "vr", "lm")
COUNTED_PARTS = ("tower", "saliency", "vr_build", "vr", "absorbed", "plain")
FORMULATION_PARTS = ("absorbed", "plain")  # the cross-attention's `attend_<formulation>` calls


def _wrapped(function: Callable, part: str, start: Callable, stop: Callable) -> Callable:
    def call(*args, **kwargs):
        start(part, part)
        out = function(*args, **kwargs)
        stop(part, part)
        return out

    return call


@contextmanager
def probe_prefill(model, start: Callable, stop: Callable, parts: Collection[str] = TIMED_PARTS):
    """Inside the block, each forward of `model` calls `start(part, key)` / `stop(part, key)` around its `parts`:
    `tower`, `projector`, `lm` (the decoder, VR included), `vr` (each VR module; key = the module), `vision`
    (`get_image_features`: tower, saliency, projector, packing), `vr_build` (`VisionRememberInputs.build`),
    `saliency` (`SaliencyRecorder.pop`) and `absorbed` / `plain` (each VR cross-attention's `attend_absorbed` /
    `attend_plain`: the formulation it ran). The key of the others is the part's name."""
    inner = model.model
    modules = [("tower", inner.vision_tower), ("projector", inner.multi_modal_projector), ("lm", inner.language_model)]
    modules += [("vr", module) for module in inner.language_model.vision_remember.values()]
    recorder = inner._saliency_recorder
    with ExitStack() as stack:
        for part, module in modules:
            if part in parts:
                stack.enter_context(
                    around_forward(module, lambda m, part=part: start(part, m), lambda m, part=part: stop(part, m))
                )
        if "vision" in parts:
            features = _wrapped(inner.get_image_features, "vision", start, stop)
            stack.enter_context(mock.patch.object(inner, "get_image_features", features))
        if "vr_build" in parts:
            build = staticmethod(_wrapped(VisionRememberInputs.build, "vr_build", start, stop))
            stack.enter_context(mock.patch.object(VisionRememberInputs, "build", build))
        if "saliency" in parts and recorder is not None:
            stack.enter_context(mock.patch.object(recorder, "pop", _wrapped(recorder.pop, "saliency", start, stop)))
        for part in (p for p in FORMULATION_PARTS if p in parts):
            for module in inner.language_model.vision_remember.values():
                attend = getattr(module.cross_attention, f"attend_{part}")
                stack.enter_context(
                    mock.patch.object(module.cross_attention, f"attend_{part}", _wrapped(attend, part, start, stop))
                )
        yield


@contextmanager
def count_calls(model):
    """Counts per prefill (the yielded dict): tower forwards, saliency computations, VR-input builds, VR calls, and
    VR cross-attentions run in the absorbed / plain formulation."""
    counts = dict.fromkeys(COUNTED_PARTS, 0)

    def stop(part, key):
        counts[part] += 1

    with probe_prefill(model, lambda part, key: None, stop, COUNTED_PARTS):
        yield counts


def prefill(model, inputs):
    """The prompt's forward with a KV cache, logits of the last position only, and the greedy next token."""
    out = model(**inputs, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].argmax(-1), getattr(out, OUTPUT_CACHE)


def decode(model, token, cache, steps: int):
    """`steps` greedy single-token steps on `cache`, passed and read under the installed Transformers' names (the
    old `past_key_values` warns on every call from 5.24 on)."""
    for _ in range(steps):
        out = model(input_ids=token[:, None], **{GENERATION_CACHE: cache}, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1)
        cache = getattr(out, OUTPUT_CACHE)
    return token


def instrumented_run(model, inputs, device, do_flops: bool) -> dict:
    """The first prefill of a case (also its warm-up): FLOPs, per-prefill call counts and peak memory."""
    result = {}
    with torch.inference_mode():
        with PeakMemory(device) as memory, count_calls(model) as calls:
            if do_flops:
                with flop_counter() as counter, OpCounter() as ops:
                    prefill(model, inputs)
            else:
                with OpCounter() as ops:
                    prefill(model, inputs)
    result["aten_ops"] = ops.compute
    result["aten_ops_with_views"] = ops.total
    result["peak_extra_mib"] = memory.extra_mib
    result["peak_total_mib"] = memory.total_mib
    result["calls_per_prefill"] = dict(calls)
    if do_flops:
        result["flops"] = component_flops(module_flops(counter))
    return result


def timed_run(model, inputs, device, decode_tokens: int) -> dict:
    """One timed prefill (with its parts' spans) and, on its cache, `decode_tokens` timed decode steps:
    `{"ttft_s", "decode_s", "spans": {part: ms}}`."""
    marks = Marks(device)
    with torch.inference_mode():
        with probe_prefill(model, lambda part, key: marks.start(key), lambda part, key: marks.stop(key, part)):
            ttft, (token, cache) = timed(lambda: prefill(model, inputs), device)
        decode_s = timed(lambda: decode(model, token, cache, decode_tokens), device)[0] if decode_tokens else None
    return {"ttft_s": ttft, "decode_s": decode_s, "spans": marks.totals_ms()}


# ---- numbers per case ----
FLOP_COMPONENTS = {  # component -> regex on FlopCounterMode's module names (each module counted once)
    "tower": r"\.model\.vision_tower$",
    "tower_layers": r"\.model\.vision_tower\..*encoder\.layers\.\d+$",
    "projector": r"\.model\.multi_modal_projector$",
    "vr": r"\.model\.language_model\.vision_remember\.\d+$",
    "lm_layers": r"\.model\.language_model\.layers\.\d+$",
    "lm_head": r"\.lm_head$",
}


def component_flops(per_module: dict[str, int]) -> dict[str, int]:
    """FLOPs per `FLOP_COMPONENTS` entry, `total` and `other` (total minus the components; `tower_layers` is part of
    `tower`)."""
    out = {name: 0 for name in FLOP_COMPONENTS}
    for module, flops in per_module.items():
        for name, pattern in FLOP_COMPONENTS.items():
            if re.search(pattern, module):
                out[name] += flops
    out["total"] = per_module.get("Global", 0)
    out["other"] = out["total"] - sum(out[name] for name in FLOP_COMPONENTS if name != "tower_layers")
    return out


def summarise(runs: list[dict], decode_tokens: int) -> dict:
    """Medians over a case's timed runs: TTFT, decode speed, and the TTFT's breakdown into parts (ms). `{}` without
    timed runs (`--repeats 0`)."""
    if not runs:
        return {}
    ttft = [r["ttft_s"] for r in runs]
    result = {
        "ttft_ms": median(ttft) * 1e3,
        "ttft_ms_min": min(ttft) * 1e3,
        "ttft_ms_runs": [t * 1e3 for t in ttft],
    }
    decode_s = [r["decode_s"] for r in runs if r["decode_s"] is not None]
    if decode_s:
        result["decode_tok_s"] = decode_tokens / median(decode_s)
        result["decode_ms_per_token"] = median(decode_s) / decode_tokens * 1e3
    keys = set().union(*(r["spans"] for r in runs))
    parts = {key: median([r["spans"].get(key, 0.0) for r in runs]) for key in keys}
    result["breakdown_ms"] = {
        "vision": parts.get("vision", 0.0),
        "tower": parts.get("tower", 0.0),
        "projector": parts.get("projector", 0.0),
        "vr_build": parts.get("vr_build", 0.0),
        "vr": parts.get("vr", 0.0),
        "lm_without_vr": parts.get("lm", 0.0) - parts.get("vr", 0.0),
        "rest": result["ttft_ms"] - parts.get("vision", 0.0) - parts.get("vr_build", 0.0) - parts.get("lm", 0.0),
    }
    result["vr_ms"] = parts.get("vr", 0.0) + parts.get("vr_build", 0.0)
    return result


def formulation_used(calls: dict) -> str | None:
    """The cross-attention formulation VR ran in a prefill, from `calls_per_prefill`: `absorbed`, `plain`, `mixed`
    (layers differed) or None (no VR)."""
    ran = [name for name in ("absorbed", "plain") if calls.get(name)]
    return {0: None, 1: ran[0] if ran else None, 2: "mixed"}[len(ran)]


def vr_shares(ttft_ms: float | None, vr_ms: float | None, vr_flops: float | None, total_flops: float | None) -> dict:
    """VR's share of the prefill FLOPs and of its time (the VR modules and their inputs' build), in %, and the ratio
    time share / FLOP share (1: VR runs as fast per FLOP as the rest of the prefill). Keys present when computable."""
    out = {}
    if vr_flops and total_flops:
        out["vr_flops_pct"] = 100 * vr_flops / total_flops
    if vr_ms and ttft_ms:
        out["vr_time_pct"] = 100 * vr_ms / ttft_ms
    if "vr_flops_pct" in out and "vr_time_pct" in out:
        out["vr_time_over_flop_share"] = out["vr_time_pct"] / out["vr_flops_pct"]
    return out


def shared_layer_times(rows: list[dict]) -> dict[tuple[int, int], dict[str, float]]:
    """Per `(crops, image tokens)`: the median over the variants of the tower time (every variant at that crop
    count runs the same tower) and of the decoder layers' time without VR (the same layers over the same sequence).
    The full-depth estimate scales these instead of each variant's own, so that the noise of one variant's tower or
    decoder does not enter its estimate four times over."""
    tower, lm = {}, {}
    for row in rows:
        if "breakdown_ms" in row:
            tower.setdefault(row["crops"], []).append(row["breakdown_ms"]["tower"])
            lm.setdefault((row["crops"], row["image_tokens"]), []).append(row["breakdown_ms"]["lm_without_vr"])
    return {key: {"tower": median(tower[key[0]]), "lm_without_vr": median(times)} for key, times in lm.items()}


def full_depth_estimate(row: dict, config: LlavaVRConfig, reference_depth: dict | None, shared: dict) -> dict | None:
    """TTFT / FLOPs with the tower and the decoder layers scaled to the reference depth: the row's TTFT with its own
    tower and decoder-layer times replaced by `shared_layer_times` (`shared`) scaled, VR, projector and the rest as
    measured. FLOPs are exact (the layers of one stack are identical). An estimate for presets with cut depths,
    labelled as such in the output; FLOPs only without timed rounds."""
    if not reference_depth:
        return None
    vision_scale = reference_depth["vision"] / config.vision_config.num_hidden_layers
    text_scale = reference_depth["text"] / config.text_config.num_hidden_layers
    out = {"vision_scale": vision_scale, "text_scale": text_scale, "ttft_ms": None}
    if "breakdown_ms" in row:
        own, layers = row["breakdown_ms"], shared[row["crops"], row["image_tokens"]]
        out["ttft_ms"] = (
            row["ttft_ms"]
            - own["tower"]
            - own["lm_without_vr"]
            + layers["tower"] * vision_scale
            + layers["lm_without_vr"] * text_scale
        )
        out["vr_ms"] = row["vr_ms"]
    total = None
    if "flops" in row:
        flops = row["flops"]
        total = flops["total"] + flops["tower_layers"] * (vision_scale - 1) + flops["lm_layers"] * (text_scale - 1)
        out["gflops"] = total / 1e9
        out["gflops_vr"] = flops["vr"] / 1e9
    out.update(vr_shares(out["ttft_ms"], out.get("vr_ms"), row.get("flops", {}).get("vr"), total))
    return out


def add_ratios(rows: list[dict], key: str, nested: str | None = None, prefix: str = ""):
    """Sets `x_pool` = value / value(`adaptive_avg_pool`), `mlp_speedup` = value(`mlp`) / value and `x_proj` =
    value / value(same projector without VR) at the same crop count, for `row[key]` (or `row[nested][key]`, written
    into `row[nested]`), each name preceded by `prefix`."""

    def value(row):
        return row.get(key) if nested is None else (row.get(nested) or {}).get(key)

    by_case = {(r["variant"], r["crops"]): r for r in rows}

    def reference(variant, crops):
        other = by_case.get((variant, crops))
        return None if other is None else value(other)

    for row in rows:
        own = value(row)
        if own is None:
            continue
        target = row if nested is None else row[nested]
        pool, mlp, projector = (reference(v, row["crops"]) for v in (POOL, MLP, row["projector"]))
        target[prefix + "x_pool"] = own / pool if pool else None
        target[prefix + "mlp_speedup"] = mlp / own if mlp else None
        target[prefix + "x_proj"] = own / projector if projector and row["vr"] != "none" else None


def add_flat_columns(row: dict):
    """CSV-friendly flat copies of the nested fields: `<part>_ms`, `gflops_<component>`, `full_depth_<key>`."""
    for key, value in row.get("breakdown_ms", {}).items():
        row[f"{key}_ms"] = value
    for key, value in row.get("flops", {}).items():
        row[f"gflops_{key}"] = value / 1e9
    for key, value in (row.get("full_depth_estimate") or {}).items():
        row[f"full_depth_{key}"] = value


# ---- targets and comparisons ----
# The efficiency targets, judged on presets at real widths (`targets` in the preset); at Qwen2-0.5B full depth the
# cpu-small preset's full-depth estimate stands for the model:
TARGETS = {
    # VR over pooling alone, % of TTFT: the default model (token self-attention, the paper's v2; its exact FLOPs are
    # +10.6-11.3 % at Qwen2-0.5B) and the paper's v1
    "max_vr_over_pool_pct": {VR_MAIN: 12.0, VR_V1: 8.0},
    # VR's share of the TTFT over its share of the prefill FLOPs (1: VR runs as fast per FLOP as the rest)
    "max_time_over_flop_share": {
        VR_MAIN: 1.10,
        VR_V1: 1.10,
        "adaptive_avg_pool+deformable": 1.10,
        "adaptive_avg_pool+global": 1.10,
    },
    # TTFT(mlp) / TTFT(default model): the paper's 1.60x at Qwen2-1.5B
    "min_mlp_speedup": 1.6,
}
# the comparisons: each VR row against the variant with these settings changed (when that one ran too)
COUNTERPARTS = {"formulation": {"formulation": "plain"}, "width": {"width": None}}


def numbers(row: dict, estimate: bool) -> dict | None:
    """The numbers a row is judged on: its full-depth estimate, or the row as measured."""
    return row.get("full_depth_estimate") if estimate else row


def target_checks(rows: list[dict], estimate: bool = False) -> list[dict]:
    """`{"target", "variant", "crops", "value", "limit", "met"}` per target and crop count: VR over pooling (%) for
    the variants of `TARGETS["max_vr_over_pool_pct"]`, time share / FLOP share for those of
    `TARGETS["max_time_over_flop_share"]`, the `mlp` speed-up for `VR_MAIN`. Rows without the numbers are
    skipped."""
    checks = []

    def check(target, row, value, limit, met):
        checks.append(
            dict(target=target, variant=row["variant"], crops=row["crops"], value=value, limit=limit, met=bool(met))
        )

    for row in rows:
        source = numbers(row, estimate)
        limit = TARGETS["max_vr_over_pool_pct"].get(row["variant"])
        if not source or source.get("x_pool") is None:
            continue
        if limit is not None:
            over = (source["x_pool"] - 1) * 100
            check("vr_over_pool_pct", row, over, limit, over <= limit)
        share, most = source.get("vr_time_over_flop_share"), TARGETS["max_time_over_flop_share"].get(row["variant"])
        if share is not None and most is not None:
            check("time_over_flop_share", row, share, most, share <= most)
        speedup = source.get("mlp_speedup")
        if row["variant"] == VR_MAIN and speedup is not None:
            least = TARGETS["min_mlp_speedup"]
            check("mlp_speedup", row, speedup, least, speedup >= least)
    return checks


def _describe(check: dict) -> str:
    verdict = "met" if check["met"] else "missed"
    value, limit = check["value"], check["limit"]
    if check["target"] == "vr_over_pool_pct":
        return f"VR over pooling {value:+.1f}% (target <= +{limit:g}%: {verdict})"
    if check["target"] == "time_over_flop_share":
        return f"VR time share / FLOP share {value:.2f} (target <= {limit:g}: {verdict})"
    return f"vs {MLP} {value:.2f}x (target >= {limit:g}x: {verdict})"


def targets_summary(rows: list[dict], estimate: bool = False) -> list[str]:
    """One line per (variant, crop count) with its `target_checks`."""
    lines = {}
    for check in target_checks(rows, estimate):
        key = (check["variant"], check["crops"])
        lines.setdefault(key, []).append(_describe(check))
    return [f"{variant} crops={crops}: " + "; ".join(parts) for (variant, crops), parts in lines.items()]


def counterpart_pairs(rows: list[dict], kind: str) -> list[tuple[dict, dict]]:
    """`(row, counterpart)` for every VR row whose `COUNTERPARTS[kind]` variant ran at the same crop count."""
    by_case = {(r["variant"], r["crops"]): r for r in rows}
    pairs = []
    for row in rows:
        if row["vr"] == "none":
            continue
        other = parse_variant(row["variant"]).with_(**COUNTERPARTS[kind]).name
        if other != row["variant"] and (other, row["crops"]) in by_case:
            pairs.append((row, by_case[other, row["crops"]]))
    return pairs


def _ratio(a, b):
    return a / b if a is not None and b else None


def _over_pool(row: dict, estimate: bool):
    source = numbers(row, estimate) or {}
    return None if source.get("x_pool") is None else (source["x_pool"] - 1) * 100


def comparison_table(rows: list[dict], kind: str, estimate: bool) -> str:
    """Each VR row against its `kind` counterpart: TTFT and VR time ratios, VR FLOP ratio, VR over pooling of both
    (full-depth estimate when `estimate`), VR share of the FLOPs of both."""
    headers = [
        "variant",
        "vs",
        "crops",
        "formulation",
        "TTFT ratio",
        "VR time ratio",
        "VR GFLOP ratio",
        "VR over pool %",
        "vs: VR over pool %",
        "VR % FLOPs",
        "vs: VR % FLOPs",
    ]
    body = []
    for row, other in counterpart_pairs(rows, kind):
        own, theirs = numbers(row, estimate) or {}, numbers(other, estimate) or {}
        body.append(
            [
                row["variant"],
                other["variant"],
                row["crops"],
                row.get("vr_formulation_used"),
                fmt(_ratio(own.get("ttft_ms"), theirs.get("ttft_ms")), ".3f"),
                fmt(_ratio(row.get("vr_ms"), other.get("vr_ms")), ".2f"),
                fmt(_ratio(row.get("flops", {}).get("vr"), other.get("flops", {}).get("vr")), ".2f"),
                fmt(_over_pool(row, estimate), "+.1f"),
                fmt(_over_pool(other, estimate), "+.1f"),
                fmt(own.get("vr_flops_pct"), ".2f"),
                fmt(theirs.get("vr_flops_pct"), ".2f"),
            ]
        )
    return markdown_table(headers, body)


# ---- report ----
# plot: line style per VR interaction (registry order; later ones solid), one colour per variant
VR_STYLES = dict(zip(["none", *VR_INTERACTIONS], ["--", "-", "-.", ":", (0, (3, 1, 1, 1))], strict=False))


def results_table(rows: list[dict]) -> str:
    headers = [
        "variant",
        "crops (tiles)",
        "img tok",
        "TTFT ms",
        "x pool",
        "mlp/TTFT",
        "x own proj",
        "vision ms",
        "VR ms",
        "decode tok/s",
        "peak MiB",
        "GFLOP",
        "GFLOP x pool",
        "aten ops",
    ]
    body = []
    flops_pool = {r["crops"]: r.get("flops", {}).get("total") for r in rows if r["variant"] == POOL}
    for r in rows:
        gflops = r.get("flops", {}).get("total")
        body.append(
            [
                r["variant"],
                f"{r['crops']} ({r['tower_tiles']})",
                r["image_tokens"],
                fmt(r.get("ttft_ms"), ".1f"),
                fmt(r.get("x_pool"), ".3f"),
                fmt(r.get("mlp_speedup"), ".2f", "x"),
                fmt(r.get("x_proj"), ".3f"),
                fmt(r.get("breakdown_ms", {}).get("vision"), ".1f"),
                fmt(r.get("vr_ms") if r["vr"] != "none" else None, ".1f"),
                fmt(r.get("decode_tok_s"), ".1f"),
                fmt(r["peak_extra_mib"], ".0f"),
                fmt(gflops / 1e9 if gflops else None, ".1f"),
                fmt(gflops / flops_pool[r["crops"]] if gflops and flops_pool.get(r["crops"]) else None, ".3f"),
                r.get("aten_ops"),
            ]
        )
    return markdown_table(headers, body)


def estimate_table(rows: list[dict]) -> str:
    headers = [
        "variant",
        "crops",
        "est. TTFT ms",
        "x pool",
        "mlp/TTFT",
        "GFLOP (exact)",
        "GFLOP x pool",
        "mlp GFLOP / GFLOP",
        "VR GFLOP",
        "VR % of FLOPs",
        "VR % of time",
        "time / FLOP share",
    ]
    body = []
    for r in rows:
        e = r.get("full_depth_estimate")
        if not e:
            continue
        body.append(
            [
                r["variant"],
                r["crops"],
                fmt(e.get("ttft_ms"), ".1f"),
                fmt(e.get("x_pool"), ".3f"),
                fmt(e.get("mlp_speedup"), ".2f", "x"),
                fmt(e.get("gflops"), ".1f"),
                fmt(e.get("gflops_x_pool"), ".3f"),
                fmt(e.get("gflops_mlp_speedup"), ".2f", "x"),
                fmt(e.get("gflops_vr") if r["vr"] != "none" else None, ".1f"),
                fmt(e.get("vr_flops_pct"), ".2f"),
                fmt(e.get("vr_time_pct"), ".2f"),
                fmt(e.get("vr_time_over_flop_share"), ".2f"),
            ]
        )
    return markdown_table(headers, body)


def _colour(variant: str, families: list[str]):
    """tab20 colour pairs: one pair per variant family (the variant with its formulation left to `auto`), the dark
    shade for `auto` / `absorbed`, the light one for `:plain`."""
    spec = parse_variant(variant)
    family = spec.with_(formulation="auto").name
    if family not in families:
        families.append(family)
    colours = pyplot().get_cmap("tab20").colors
    return colours[(2 * families.index(family) + (spec.formulation == "plain")) % len(colours)]


def plot(rows: list[dict], path: Path, title: str):
    """Left: TTFT over the crop count per variant (measured); right: TTFT relative to pooling alone, in the
    full-depth estimate when there is one (where the targets apply: a dotted line at each VR-over-pooling target),
    else measured."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(14, 5.5))
    estimate = any(r.get("full_depth_estimate", {}).get("x_pool") for r in rows)
    families = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        line = VR_STYLES.get(parse_variant(variant).vr, "-")
        kwargs = dict(linestyle=line, marker="o", color=_colour(variant, families), label=variant)
        own = [r for r in rows if r["variant"] == variant and "ttft_ms" in r]
        if own:
            left.plot(*zip(*sorted((r["crops"], r["ttft_ms"]) for r in own), strict=True), **kwargs)
        rel = sorted((r["crops"], (r.get("full_depth_estimate") if estimate else r).get("x_pool")) for r in own)
        rel = [(x, y) for x, y in rel if y is not None]
        if rel:
            right.plot(*zip(*rel, strict=True), **kwargs)
    left.set(xlabel="AnyRes crops (tower tiles = crops + 1)", ylabel="TTFT (ms, median, as measured)", title=title)
    left.set_yscale("log")
    right.set(
        xlabel="AnyRes crops",
        ylabel="TTFT / TTFT(adaptive_avg_pool, no VR)",
        title="relative to pooling alone" + (" (full-depth estimate)" if estimate else " (measured)"),
    )
    for limit in TARGETS["max_vr_over_pool_pct"].values():
        right.axhline(1 + limit / 100, color="grey", linewidth=0.8, linestyle=":")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
        axis.set_xticks(sorted({r["crops"] for r in rows}))
    right.legend(fontsize=7, loc="best")
    save_figure(fig, path)


def _print_comparisons(rows: list[dict], estimate: bool):
    where = "full-depth estimate" if estimate else "measured"
    titles = {
        "formulation": f"Formulation: each VR variant against its `:plain` twin (ratios = variant / twin; "
        f"VR over pooling and VR % of FLOPs: {where})",
        "width": f"Width: each `:w<N>` variant against the same at the default width (ratios = variant / "
        f"default; VR over pooling and VR % of FLOPs: {where})",
    }
    for kind, title in titles.items():
        if counterpart_pairs(rows, kind):
            print(f"\n{title}:\n")
            print(comparison_table(rows, kind, estimate))


def print_report(rows: list[dict], reference_depth: dict | None, targets: bool):
    """The results table, the full-depth estimate (when there is one), the formulation and width comparisons and,
    with `targets` (presets at real widths), how the targeted variants compare with `TARGETS` (on the full-depth
    estimate when there is one: a cut-depth model's VR share is not the model's)."""
    print()
    print(results_table(rows))
    estimate = any(r.get("full_depth_estimate") for r in rows)
    if estimate:
        print(
            f"\nFull-depth estimate ({reference_depth['vision']} tower + {reference_depth['text']} decoder layers; "
            "tower and decoder-layer times scaled, FLOPs exact, VR/projector/rest as measured):\n"
        )
        print(estimate_table(rows))
    _print_comparisons(rows, estimate)
    if not targets:
        return
    lines = targets_summary(rows, estimate)
    if lines:
        print(f"\nTargets ({'full-depth estimate' if estimate else 'measured'}; {VR_MAIN} = the default model):")
        for line in lines:
            print("  - " + line)


__all__ = [
    "PROG",
    "TARGETS",
    "Plan",
    "build_parser",
    "comparison_table",
    "counterpart_pairs",
    "print_report",
    "run",
    "target_checks",
]
