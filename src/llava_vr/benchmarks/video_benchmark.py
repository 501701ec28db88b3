# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""`llava-vr bench video`: time to first token of a video prompt, `mlp` vs pooling vs pooling + Vision Remember.

LLaVA-OneVision's video layout (each frame through the tower at the base tile, the projector, bilinear pooling of the
frame's token grid by `spatial_pool_stride`, one newline per video), through the Transformers model's own video path
(`get_video_features`, VR on video). For each tower (`--towers`: CLIP-L/14-336 and SigLIP-so400m/14-384 widths), frame
count (`--frames`, default 8 / 16 / 32) and variant, on one video plus a short text prompt (batch 1):

- TTFT: one prefill `model(..., use_cache=True, logits_to_keep=1)` plus the greedy argmax, median of `--repeats`
  interleaved rounds (every case once per round, shuffled: background load hits all cases alike), with its parts
  (vision = `get_video_features`: tower, projector, pooling; VR inputs build; VR modules; the LLM rest);
- ratios at the same tower and frame count: `x_mlp` = TTFT / TTFT(`mlp`), `x_pool` = TTFT / TTFT(pooling alone);
- FLOPs per component from the first (instrumented, untimed) prefill of every case (`FlopCounterMode`);
- for cut depths (the CPU preset) a full-depth estimate, the method of `llava-vr bench model`: the tower and
  decoder-layer times replaced by their medians over the variants at the same tower and frame count (identical
  computations), scaled to the real depths; VR, its input build, projector, pooling and the rest as measured.

Variants (names as `llava-vr bench model`'s, all with the same `spatial_pool_stride`, 2 = OneVision's 2x2):
`mlp` (no compression before the pooling: OneVision's own video tokens, 196 per SigLIP-384 frame),
`adaptive_avg_pool` (the projector pools each frame to 14 x 14 first: 49 per frame) and `adaptive_avg_pool+sela`
(the same tokens, VR re-reading each frame's multi-level features). Writes `<stem>.json`, `.csv`, `.md` (stem
`video_<preset>_<device>` unless `--tag`) to `--output-dir`.

Examples:
    llava-vr bench video --preset tiny
    llava-vr bench video --preset cpu-small --output-dir benchmarks/reference_results/cpu
    llava-vr bench video --preset qwen2-0.5b --device cuda      # full depths, bfloat16: the GPU run
"""

import gc
import time
from contextlib import ExitStack, contextmanager
from unittest import mock

import torch

from llava_vr import LlavaVRConfig
from llava_vr.packing_llava_vr import grid_pinpoints, video_num_tokens
from llava_vr.testing_utils import tiny_text_config, tiny_vision_config
from llava_vr.vision_remember_llava_vr import VisionRememberInputs

from .cli import benchmark_parser, run_benchmark
from .flops import flop_counter, module_flops
from .machine import loadavg
from .memory import process_peak_rss_gib
from .model_benchmark import component_flops, prefill
from .model_variants import CLIP_L_336, MLP, POOL, QWEN2, QWEN2_COMMON, build_model, parse_variant, share_weights
from .reporting import markdown_table, result_meta, write_results
from .timing import Marks, around_forward, interleaved_rounds, median, timed

PROG = "llava-vr bench video"

# SigLIP-so400m/14-384 as LLaVA-OneVision uses it: its last layer dropped (26 of 27), the last hidden state, every
# patch (no CLS)
SIGLIP_SO400M_384 = dict(
    model_type="siglip_vision_model",
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=26,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
)
TOWERS = {
    "clip": dict(vision=CLIP_L_336, feature_layers=[12, 18, 23], feature_layer=-2, select="default"),
    "siglip": dict(vision=SIGLIP_SO400M_384, feature_layers=[13, 19, 25], feature_layer=-1, select="full"),
}
VR_VARIANT = f"{POOL}+sela"
VARIANTS = [MLP, POOL, VR_VARIANT]

PRESETS = {
    # CI smoke test: the tests' tiny towers (CLIP 56-px / SigLIP 42-px tiles) and LLM, 2 and 4 frames
    "tiny": dict(
        towers={
            "clip": dict(
                vision=tiny_vision_config("clip"), feature_layers=[1, 2, 3], feature_layer=-2, select="default"
            ),
            "siglip": dict(
                vision=tiny_vision_config("siglip", 42), feature_layers=[1, 2, 3], feature_layer=-1, select="full"
            ),
        },
        text=tiny_text_config(),
        frames=[2, 4],
        vr_layers=[1, 4],
        cpu_dtype="float32",
        repeats=1,
        threads=1,
        reference_depth=None,
    ),
    # Real widths (tower, Qwen2-0.5B, real vocabulary), depths cut to 1 tower and 2 decoder layers so that 32 frames
    # run in seconds on a CPU; VR's two modules sit before decoder layers 0 and 1 (the real model: 1 and 4 of 24; the
    # same computation). float32: a CPU without bf16 instructions runs bf16 matmuls many times slower.
    "cpu-small": dict(
        towers={
            name: {**tower, "vision": {**tower["vision"], "num_hidden_layers": 1}, "feature_layers": [1, 1, 1]}
            for name, tower in TOWERS.items()
        },
        text={**QWEN2_COMMON, **QWEN2["0.5b"], "num_hidden_layers": 2},
        frames=[8, 16, 32],
        vr_layers=[0, 1],
        cpu_dtype="float32",
        repeats=3,
        reference_depth={"clip": 24, "siglip": 26, "text": 24},
    ),
    # Full depths (the GPU run; bfloat16 on CUDA)
    "qwen2-0.5b": dict(
        towers=TOWERS,
        text={**QWEN2_COMMON, **QWEN2["0.5b"]},
        frames=[8, 16, 32],
        vr_layers=[1, 4],
        cpu_dtype="bfloat16",
        repeats=5,
        reference_depth=None,
    ),
}


def build_parser(prog: str = PROG):
    parser = benchmark_parser(prog, __doc__, PRESETS, "video_<preset>_<device>")
    parser.add_argument("--towers", nargs="+", choices=sorted(TOWERS), default=sorted(TOWERS))
    parser.add_argument("--frames", nargs="+", type=int, default=None, help="frame counts (default: the preset's)")
    parser.add_argument(
        "--variants", nargs="+", default=VARIANTS, help=f"`llava-vr bench model` variant names (default: {VARIANTS})"
    )
    parser.add_argument(
        "--spatial-pool-stride",
        type=int,
        default=2,
        choices=[1, 2, 3, 4],
        help="per-frame pooling of every variant (2: OneVision's 2x2)",
    )
    parser.add_argument("--text-tokens", type=int, default=32, help="text tokens around the video")
    parser.add_argument("--attn", choices=["sdpa", "flash_attention_2", "eager"], default="sdpa")
    parser.add_argument("--no-flops", action="store_true", help="skip the FlopCounterMode pass")
    parser.add_argument(
        "--no-warmup", action="store_true", help="with --no-flops: no untimed first prefill per case (long prefills)"
    )
    return parser


def run(argv: list[str] | None = None, prog: str = PROG) -> dict:
    """Runs the benchmark; returns the payload written to the JSON file."""
    return run_benchmark(build_parser(prog), PRESETS, _run, argv, prog)


def video_config(preset: dict, tower: str, variant: str, stride: int, attn: str) -> LlavaVRConfig:
    """The config of `variant` with `tower`'s vision settings at the preset's depths; VR (when the variant has it)
    before `preset["vr_layers"]`, on video."""
    spec = preset["towers"][tower]
    vision = dict(spec["vision"])
    kwargs = parse_variant(variant).config_kwargs()
    if kwargs["vision_remember_layers"]:
        kwargs["vision_remember_layers"] = list(preset["vr_layers"])
    return LlavaVRConfig(
        vision_config=vision,
        text_config=dict(preset["text"]),
        image_grid_pinpoints=grid_pinpoints(vision["image_size"], 6, 6),
        vision_aspect_ratio="anyres_max_9",
        vision_feature_layer=spec["feature_layer"],
        vision_feature_select_strategy=spec["select"],
        vision_remember_feature_layers=list(spec["feature_layers"]),
        image_token_index=min(151646, preset["text"]["vocab_size"] - 2),
        video_token_index=min(151647, preset["text"]["vocab_size"] - 1),
        spatial_pool_stride=stride,
        attn_implementation=attn,
        **kwargs,
    )


def video_inputs(config: LlavaVRConfig, frames: int, text_tokens: int, device, dtype, seed: int) -> dict:
    """One video of `frames` random frames inside `text_tokens` random text tokens, batch 1 (model kwargs)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = video_num_tokens(frames, config.token_grid_size, config.spatial_pool_stride)
    text = torch.randint(1, min(config.text_config.vocab_size, 32000), (text_tokens,), generator=generator)
    text[(text == config.image_token_id) | (text == config.video_token_id)] = 1
    video = torch.full((tokens,), config.video_token_id, dtype=torch.long)
    input_ids = torch.cat([text[: text_tokens // 2], video, text[text_tokens // 2 :]])[None]
    tile = config.vision_config.image_size
    pixels = torch.randn(1, frames, 3, tile, tile, generator=generator)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "pixel_values_videos": pixels.to(device, dtype),
    }


TIMED_PARTS = ("vision", "tower", "projector", "vr_build", "vr", "lm")


@contextmanager
def probe_video_prefill(model, marks: Marks):
    """Spans of one prefill: `vision` (`get_video_features`), `tower`, `projector`, `lm` (the decoder, VR included),
    `vr` (each VR module) and `vr_build` (`VisionRememberInputs.build`)."""
    inner = model.model
    modules = [("tower", inner.vision_tower), ("projector", inner.multi_modal_projector), ("lm", inner.language_model)]
    modules += [("vr", module) for module in inner.language_model.vision_remember.values()]

    def wrapped(function, part):
        def call(*args, **kwargs):
            marks.start(part)
            out = function(*args, **kwargs)
            marks.stop(part, part)
            return out

        return call

    with ExitStack() as stack:
        for part, module in modules:
            stack.enter_context(
                around_forward(module, marks.start, lambda m, part=part: marks.stop(m, part))  # key = the module
            )
        stack.enter_context(mock.patch.object(inner, "get_video_features", wrapped(inner.get_video_features, "vision")))
        build = staticmethod(wrapped(VisionRememberInputs.build, "vr_build"))
        stack.enter_context(mock.patch.object(VisionRememberInputs, "build", build))
        yield


def timed_prefill(model, inputs, device) -> dict:
    marks = Marks(device)
    with torch.inference_mode(), probe_video_prefill(model, marks):
        ttft = timed(lambda: prefill(model, inputs), device)[0]
    return {"ttft_s": ttft, "spans": marks.totals_ms()}


def instrumented_prefill(model, inputs, do_flops: bool) -> dict:
    """The first prefill of a case (untimed; also its warm-up): FLOPs per component."""
    with torch.inference_mode():
        if not do_flops:
            prefill(model, inputs)
            return {}
        with flop_counter() as counter:
            prefill(model, inputs)
    flops = component_flops(module_flops(counter))
    return {"flops": flops, "gflops": flops["total"] / 1e9}


def _run(args, preset: dict, device, dtype, threads: int, command: str) -> dict:
    frames_list = args.frames or preset["frames"]
    stem = args.tag or f"video_{args.preset}_{device.type}"
    meta = result_meta(
        "benchmark_video",
        args.preset,
        dtype,
        device,
        threads,
        command,
        towers=args.towers,
        frames=frames_list,
        variants=args.variants,
        spatial_pool_stride=args.spatial_pool_stride,
        text_tokens=args.text_tokens,
        repeats=args.repeats or preset["repeats"],
        attn_implementation=args.attn,
        vr_layers=preset["vr_layers"],
        reference_depth=preset["reference_depth"],
        ttft_method="median wall time of model(..., use_cache=True, logits_to_keep=1) + argmax over interleaved "
        "rounds, synchronised; the video's frames as pixel_values_videos (the processor's resizing not timed)",
        full_depth_estimate_method="TTFT with the tower and decoder-layer times replaced by their medians over the "
        "variants at the same tower and frame count (identical computations), scaled to the reference depths; "
        "VR, its input build, projector, pooling and the rest as measured per variant",
        protocol="the variants of one tower share one copy of the tower/LLM/head weights; per case one untimed "
        "instrumented prefill (FLOPs; the warm-up), then `repeats` rounds over all cases in a shuffled order "
        "per round (interleaved); medians over the rounds",
    )
    print(f"# LLaVA-VR video benchmark: preset={args.preset} device={device} dtype={meta['dtype']} threads={threads}")
    cases, rows = [], {}
    for tower in args.towers:
        base = None
        for variant in args.variants:
            config = video_config(preset, tower, variant, args.spatial_pool_stride, args.attn)
            start = time.perf_counter()
            model = build_model(config, device, dtype, args.seed)
            base = model if base is None else share_weights(model, base)
            gc.collect()
            print(f"  built {tower} {variant} in {time.perf_counter() - start:.1f} s", flush=True)
            for frames in frames_list:
                inputs = video_inputs(config, frames, args.text_tokens, device, dtype, args.seed)
                row = {
                    "tower": tower,
                    "variant": variant,
                    "projector": config.projector_type,
                    "vr": parse_variant(variant).vr,
                    "frames": frames,
                    "tokens_per_frame": config.num_video_tokens_per_frame,
                    "video_tokens": video_num_tokens(frames, config.token_grid_size, config.spatial_pool_stride),
                    "seq_len": int(inputs["input_ids"].shape[1]),
                    "vision_layers": config.vision_config.num_hidden_layers,
                    "text_layers": config.text_config.num_hidden_layers,
                }
                if not (args.no_flops and args.no_warmup):
                    row.update(instrumented_prefill(model, inputs, not args.no_flops))
                cases.append((model, inputs, (tower, variant, frames)))
                rows[tower, variant, frames] = row
                print(f"    {frames:3d} frames: {row['video_tokens']} video tokens", flush=True)
    repeats = args.repeats or preset["repeats"]
    runs = {key: [] for *_, key in cases}
    for round_index, order in enumerate(interleaved_rounds(len(cases), repeats, args.seed)):
        for i in order:
            model, inputs, key = cases[i]
            runs[key].append(timed_prefill(model, inputs, device))
        print(f"  round {round_index + 1}/{repeats} done (load {loadavg()})", flush=True)
        # the results so far after every round: a run stopped early keeps its completed rounds
        payload = _write(args, stem, meta, rows, runs, preset, round_index + 1)
    return payload


def _write(args, stem: str, meta: dict, rows: dict, runs: dict, preset: dict, rounds: int) -> dict:
    results = summarise({key: dict(row) for key, row in rows.items()}, runs, preset["reference_depth"])
    meta = {
        **meta,
        "rounds_completed": rounds,
        "process_peak_rss_gib": process_peak_rss_gib(),
        "loadavg_at_end": loadavg(),
    }
    payload = {"meta": meta, "results": results}
    table = report_table(results, bool(preset["reference_depth"]))
    print("\n" + table)
    write_results(args.output_dir, stem, payload, results)
    (args.output_dir / f"{stem}.md").write_text(report_markdown(meta, table))
    return payload


def summarise(rows: dict, runs: dict, reference_depth: dict | None) -> list[dict]:
    """Medians, breakdown, full-depth estimate and ratios of every row."""
    for key, row in rows.items():
        timed_runs = runs[key]
        row["ttft_ms"] = median([r["ttft_s"] for r in timed_runs]) * 1e3
        row["ttft_ms_runs"] = [r["ttft_s"] * 1e3 for r in timed_runs]
        parts = {p: median([r["spans"].get(p, 0.0) for r in timed_runs]) for p in TIMED_PARTS}
        row["breakdown_ms"] = {
            "vision": parts["vision"],
            "tower": parts["tower"],
            "projector": parts["projector"],
            "vr_build": parts["vr_build"],
            "vr": parts["vr"],
            "lm_without_vr": parts["lm"] - parts["vr"],
            "rest": row["ttft_ms"] - parts["vision"] - parts["vr_build"] - parts["lm"],
        }
        row["vr_ms"] = parts["vr"] + parts["vr_build"]
    if reference_depth:
        shared = {}
        for (tower, _, frames), row in rows.items():
            shared.setdefault((tower, frames), []).append(row)
        for (tower, _, frames), row in rows.items():
            group = shared[tower, frames]
            tower_ms = median([r["breakdown_ms"]["tower"] for r in group])
            # the decoder layers' time per token position is shared only between equal sequences
            same_seq = [r for r in group if r["seq_len"] == row["seq_len"]]
            lm_ms = median([r["breakdown_ms"]["lm_without_vr"] for r in same_seq])
            vision_scale = reference_depth[tower] / row["vision_layers"]
            text_scale = reference_depth["text"] / row["text_layers"]
            own = row["breakdown_ms"]
            estimate = row["ttft_ms"] - own["tower"] - own["lm_without_vr"]
            estimate += tower_ms * vision_scale + lm_ms * text_scale
            row["full_depth_estimate"] = {
                "ttft_ms": estimate,
                "vision_scale": vision_scale,
                "text_scale": text_scale,
                "tower_ms": tower_ms * vision_scale,
            }
            if "flops" in row:
                flops = row["flops"]
                total = flops["total"] + flops["tower_layers"] * (vision_scale - 1)
                total += flops["lm_layers"] * (text_scale - 1)
                row["full_depth_estimate"]["gflops"] = total / 1e9
    by_key = {(r["tower"], r["variant"], r["frames"]): r for r in rows.values()}
    for (tower, _, frames), row in rows.items():
        for name, reference in (("x_mlp", MLP), ("x_pool", POOL)):
            other = by_key.get((tower, reference, frames))
            row[name] = row["ttft_ms"] / other["ttft_ms"] if other else None
            if reference_depth and other:
                row["full_depth_estimate"][name] = (
                    row["full_depth_estimate"]["ttft_ms"] / other["full_depth_estimate"]["ttft_ms"]
                )
        for key, value in row["breakdown_ms"].items():
            row[f"{key}_ms"] = value
        for key, value in (row.get("full_depth_estimate") or {}).items():
            row[f"full_depth_{key}"] = value
    return list(rows.values())


def report_table(rows: list[dict], estimate: bool) -> str:
    """One line per case: tokens, measured TTFT and its ratios, the full-depth estimate and its ratios."""
    headers = ["tower", "frames", "variant", "tokens/frame", "video tokens", "TTFT ms", "x mlp", "x pool", "VR ms"]
    if estimate:
        headers += ["full-depth TTFT ms (est.)", "x mlp (est.)", "x pool (est.)"]
    lines = []
    order = {variant: index for index, variant in enumerate(VARIANTS)}
    for r in sorted(rows, key=lambda r: (r["tower"], r["frames"], order.get(r["variant"], len(order)), r["variant"])):
        line = [r["tower"], r["frames"], r["variant"], r["tokens_per_frame"], r["video_tokens"], r["ttft_ms"]]
        line += [r["x_mlp"], r["x_pool"], r["vr_ms"]]
        if estimate:
            e = r["full_depth_estimate"]
            line += [e["ttft_ms"], e.get("x_mlp"), e.get("x_pool")]
        lines.append(line)
    return markdown_table(headers, lines)


def report_markdown(meta: dict, table: str) -> str:
    machine = meta["machine"]
    return (
        f"# Video TTFT, preset {meta['preset']} ({meta['dtype']}, {machine.get('gpu', machine.get('cpu'))}, "
        f"{machine.get('torch_threads', '')} threads)\n\n"
        f"Command: `{meta['command']}`; {meta['timestamp']}; {meta['rounds_completed']} interleaved rounds; load "
        f"average at the end {meta.get('loadavg_at_end')} (a shared 2-core machine).\n\n"
        f"{table}\n\nTTFT: {meta['ttft_method']}. Full-depth estimate: {meta['full_depth_estimate_method']}.\n"
    )


__all__ = ["PRESETS", "TOWERS", "VARIANTS", "build_parser", "run", "summarise", "video_config", "video_inputs"]
