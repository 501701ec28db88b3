# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""`llava-vr bench vision-remember`: one Vision Remember (VR) module alone; interactions, widths and formulations
side by side.

Builds `VisionRemember` and `VisionRememberInputs` directly (random weights, synthetic hidden states, multi-level
features, saliency and token cells: one image of `tiles` tiles of 12x12 = 144 tokens over 24x24 = 576-cell feature
maps). For every LLM width x VR width x interaction of `VR_INTERACTIONS` x cross-attention formulation (`absorbed`:
the K/V projections moved onto the queries and the attended features; `plain`: keys and values of every feature cell)
x tile count it measures:

- one VR forward (median of interleaved rounds) with its parts (plain: the feature LayerNorm + K/V projections; the
  rest of the cross-attention; token self-attention; other), and `VisionRememberInputs.build`;
- absorbed against plain on the same weights and inputs: time ratios, FLOPs, relative output difference;
- peak memory (`memory.PeakMemory`), FLOPs per part and GFLOP/s next to a plain matmul timed in the same rounds;
- a profiler split by operator class for the largest case of each;
- structural checks from the dispatched operators: the op count does not grow with the tiles (no Python loop over
  tiles or windows), SELA's cross-attention is one attention pass, no 576 x 576 tensor per tile.

A case whose cross-attention needs more than `--max-gflop` GFLOP in its formulation and more than in the other is
skipped and listed. Writes `<stem>.json`, `.csv`, `.png` (stem `vision_remember_<preset>_<device>` unless `--tag`) to
`--output-dir`; the method in full: `benchmarks/README.md`.

Examples:
    llava-vr bench vision-remember --preset tiny
    llava-vr bench vision-remember --preset real            # CPU: bfloat16, 2 / 5 / 10 tiles
    llava-vr bench vision-remember --preset real --device cuda
"""

import dataclasses
import itertools
import math
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from llava_vr import LlavaVRConfig
from llava_vr.registries_llava_vr import FORMULATIONS, VR_INTERACTIONS
from llava_vr.token_feature_attention_llava_vr import MAX_ABSORBED_BLOCKS
from llava_vr.vision_remember_llava_vr import VisionRemember, VisionRememberFeatures, VisionRememberInputs

from .cli import benchmark_parser, run_benchmark
from .flops import OpRecorder, flop_counter, matmul_gflops, matmul_peak_gflops, module_flops
from .machine import dtype_name, loadavg, quiet_profile, synchronize
from .memory import PeakMemory
from .reporting import fmt, markdown_table, plotting_available, pyplot, result_meta, save_figure, write_results
from .timing import Marks, around_forward, interleaved_rounds, median, timed

PRESETS = {
    "tiny": dict(
        vision_hidden=32,
        vision_heads=4,
        image_size=56,
        patch_size=14,
        text_hidden=[64],
        widths=[96, 32],
        formulations=["absorbed", "plain"],
        tiles=[1, 2, 4],
        cpu_dtype="float32",
        repeats=2,
        warmup=1,
        matmul_sizes=(256,),
        threads=1,
    ),
    # CLIP-ViT-L/14-336 features (1024 x 3 levels, 16 heads, 24x24 cells, 12x12 tokens per tile) into Qwen2-0.5B's
    # width (896); VR at the paper's width (3072, the multi-level feature width) and the old narrow one (1024), each
    # cross-attention formulation; 2 / 5 / 10 tiles = 1 / 4 / 9 AnyRes crops and the base tile.
    "real": dict(
        vision_hidden=1024,
        vision_heads=16,
        image_size=336,
        patch_size=14,
        text_hidden=[896],
        widths=[3072, 1024],
        formulations=["absorbed", "plain", "auto"],
        tiles=[2, 5, 10],
        cpu_dtype="bfloat16",
        repeats=5,
        warmup=1,
        matmul_sizes=(1024, 2048, 4096),
    ),
}
TEXT_TOKENS = 32


def build_config(
    preset: dict, text_hidden: int, interaction: str, width: int | None = None, formulation: str = "auto"
) -> LlavaVRConfig:
    """A config whose VR (width `width`, default: the multi-level feature width) reads 3 feature levels of the
    preset's tower into an LLM of width `text_hidden`, computing its cross-attention in `formulation`."""
    return LlavaVRConfig(
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=preset["vision_hidden"],
            intermediate_size=4 * preset["vision_hidden"],
            num_hidden_layers=4,
            num_attention_heads=preset["vision_heads"],
            image_size=preset["image_size"],
            patch_size=preset["patch_size"],
        ),
        text_config=dict(
            model_type="qwen2",
            hidden_size=text_hidden,
            intermediate_size=4 * text_hidden,
            num_hidden_layers=2,
            num_attention_heads=max(1, text_hidden // 64),
            num_key_value_heads=1,
            vocab_size=1000,
        ),
        image_token_index=999,
        projector_type="adaptive_avg_pool",
        vision_remember_layers=[1],
        vision_remember_feature_layers=[1, 2, 3],
        vision_remember_interaction=interaction,
        vision_remember_hidden_size=width,
        vision_remember_formulation=formulation,
    )


def build_module(config, device, dtype, seed=0) -> VisionRemember:
    torch.manual_seed(seed)
    module = VisionRemember(config)  # plain nn init: random, non-zero output projection (a "trained" VR)
    return module.to(device, dtype).eval()


def synthetic_inputs(config, tiles: int, device, dtype, seed=0):
    """Hidden states `(1, S, D)` with `tiles * g*g` vision tokens after `TEXT_TOKENS // 2` text tokens, and the
    arguments of `VisionRemember.prepare_inputs` over `(tiles, G*G, 3C)` features (the same for every config with the
    same shapes and `seed`)."""
    generator = torch.Generator().manual_seed(seed)
    g, grid = config.token_grid_size, config.patch_grid_size
    tokens = tiles * g * g
    seq = tokens + TEXT_TOKENS
    hidden = torch.randn(1, seq, config.text_config.hidden_size, generator=generator).to(device, dtype)
    mask = torch.zeros(1, seq, dtype=torch.bool)
    mask[0, TEXT_TOKENS // 2 : TEXT_TOKENS // 2 + tokens] = True
    features = torch.randn(tiles, grid * grid, config.vision_remember_feature_size, generator=generator)
    saliency = torch.rand(tiles, grid * grid, generator=generator)
    tile, row, col = torch.meshgrid(torch.arange(tiles), torch.arange(g), torch.arange(g), indexing="ij")
    cells = torch.stack((tile, row, col), -1).reshape(-1, 3)
    image_features = VisionRememberFeatures(
        [features.to(device, dtype)], [saliency.to(device, dtype)], [cells.to(device)]
    )
    args = (mask.to(device), image_features, config)
    return hidden, args


@dataclass
class Case:
    """One (LLM width, VR width, interaction, formulation, tiles) case: its result row, module and inputs (`inputs`
    built from `build_args`), and the module's output of the instrumented pass (`output`, compared across
    formulations)."""

    row: dict
    module: VisionRemember
    hidden: torch.Tensor
    build_args: tuple
    inputs: VisionRememberInputs
    output: torch.Tensor | None = None


PROG = "llava-vr bench vision-remember"


def build_parser(prog: str = PROG):
    parser = benchmark_parser(prog, __doc__, PRESETS, "vision_remember_<preset>_<device>")
    parser.add_argument("--interactions", nargs="+", choices=list(VR_INTERACTIONS), default=list(VR_INTERACTIONS))
    parser.add_argument("--tiles", nargs="+", type=int, default=None)
    parser.add_argument("--text-hidden", nargs="+", type=int, default=None, help="LLM widths (default: the preset's)")
    parser.add_argument(
        "--widths",
        nargs="+",
        type=int,
        default=None,
        help="VR widths (default: the preset's; real: 3072, the paper's, and 1024)",
    )
    parser.add_argument(
        "--formulations",
        nargs="+",
        choices=list(FORMULATIONS),
        default=None,
        help="cross-attention formulations (default: absorbed plain; real: and auto)",
    )
    parser.add_argument(
        "--max-gflop",
        type=float,
        default=500.0,
        help="skip a case whose cross-attention needs more than this many GFLOP in its formulation "
        "and more than in the other (image-wide global absorbed at many tiles: seconds per call; "
        "default 500)",
    )
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--no-profile", action="store_true", help="skip the per-operator time breakdown")
    return parser


def run(argv: list[str] | None = None, prog: str = PROG) -> dict:
    """Runs the benchmark; returns the payload written to the JSON file. Restores torch's thread count."""
    return run_benchmark(build_parser(prog), PRESETS, _run, argv, prog)


def _run(args, preset: dict, device, dtype, threads: int, command: str) -> dict:
    repeats = args.repeats or preset["repeats"]
    warmup = args.warmup if args.warmup is not None else preset["warmup"]
    stem = args.tag or f"vision_remember_{args.preset}_{device.type}"
    print(
        f"# Vision Remember micro-benchmark: preset={args.preset} device={device} dtype={dtype_name(dtype)} "
        f"threads={threads}",
        flush=True,
    )
    print(
        f"  plan: LLM widths {args.text_hidden or preset['text_hidden']} x VR widths "
        f"{args.widths or preset['widths']} x {len(args.interactions)} interactions x formulations "
        f"{args.formulations or preset['formulations']} x tiles {args.tiles or preset['tiles']} = "
        f"{len(_case_keys(args, preset))} cases (less those over --max-gflop {args.max_gflop:g}); per case "
        f"one instrumented pass and {warmup} warm-up, then {repeats} timed rounds; results to "
        f"{args.output_dir / stem}.*",
        flush=True,
    )
    plotting_available(say_so=True)
    print(f"  plain matmul probe (n = {', '.join(map(str, preset['matmul_sizes']))}) ...", flush=True)
    with torch.inference_mode():
        peak = matmul_peak_gflops(device, dtype, preset["matmul_sizes"])
    meta = _meta(args, preset, device, dtype, threads, command, repeats, warmup, peak)
    print(f"  plain matmul: {peak['gflops']:.0f} GFLOP/s (n={peak['size']})", flush=True)

    cases, skipped = _instrument_cases(args, preset, device, dtype, warmup)
    for case in skipped:
        print(
            f"  skipped d={case['width']} {case['interaction']} {case['formulation']} tiles={case['tiles']}: "
            f"{case['formulation_gflop'][case['formulation']]:.0f} GFLOP, {case['flop_ratio']:.1f}x the FLOPs of "
            f"{case['auto_picks']}",
            flush=True,
        )
    rows = _time_cases(cases, repeats, peak["size"], device, dtype, args.seed, meta)
    if not args.no_profile:
        _profile_largest(cases, device)
    del cases

    checks = structural_checks(rows)
    meta["loadavg_at_end"] = loadavg()
    payload = {"meta": meta, "checks": checks, "results": rows, "skipped": skipped}
    print_report(rows, checks, skipped)
    write_results(args.output_dir, stem, payload, rows, lambda path: plot(rows, path, meta))
    return payload


def _meta(args, preset, device, dtype, threads, command, repeats, warmup, peak) -> dict:
    return result_meta(
        "benchmark_vision_remember", args.preset, dtype, device, threads, command, repeats=repeats, warmup=warmup
    ) | {
        "matmul_probe": peak,
        "memory_method": PeakMemory.describe(device),
        "flops_method": "torch.utils.flop_counter.FlopCounterMode (+ CPU fused SDPA); matmul/attention only",
        "protocol": "per case one instrumented pass (FLOPs, ops, memory) and `warmup` forwards; then `repeats` rounds "
        "over all cases in a shuffled order, each round also timing one plain n x n matmul (the limit is "
        "its median GFLOP/s over the rounds, measured interleaved with the cases)",
        "setup": {
            "vision_hidden": preset["vision_hidden"],
            "levels": 3,
            "heads": preset["vision_heads"],
            "feature_grid": preset["image_size"] // preset["patch_size"],
            "text_tokens": TEXT_TOKENS,
            "max_gflop": args.max_gflop,
        },
    }


def _case_keys(args, preset) -> list[tuple]:
    """`(LLM width, VR width, interaction, formulation, tiles)` of every case, in run order."""
    return list(
        itertools.product(
            args.text_hidden or preset["text_hidden"],
            args.widths or preset["widths"],
            args.interactions,
            args.formulations or preset["formulations"],
            args.tiles or preset["tiles"],
        )
    )


def _instrument_cases(args, preset, device, dtype, warmup: int) -> tuple[list[Case], list[dict]]:
    """Modules (one per LLM width, VR width and interaction: the formulations share its weights), inputs and the
    instrumented pass of every case. A case whose cross-attention needs more than `--max-gflop` GFLOP in its
    formulation and more than in the other is skipped (listed in the second return value)."""
    cases, skipped, modules, hidden_states, built = [], [], {}, {}, {}
    keys = _case_keys(args, preset)
    progress = tqdm(keys, desc="instrumented passes", unit="case")
    for text_hidden, width, interaction, formulation, tiles in progress:
        progress.set_postfix_str(f"d={width} {interaction} {formulation} tiles={tiles}")
        config = build_config(preset, text_hidden, interaction, width, formulation)
        if (text_hidden, width, interaction) not in modules:
            modules[text_hidden, width, interaction] = build_module(config, device, dtype, args.seed)
        module = modules[text_hidden, width, interaction]
        if (text_hidden, tiles) not in hidden_states:
            hidden_states[text_hidden, tiles] = synthetic_inputs(config, tiles, device, dtype, args.seed)
        hidden, build_args = hidden_states[text_hidden, tiles]
        build_args = (*build_args[:-1], config)
        if (text_hidden, interaction, formulation, tiles) not in built:
            with torch.inference_mode():
                built[text_hidden, interaction, formulation, tiles] = VisionRemember.prepare_inputs(*build_args)
        inputs = built[text_hidden, interaction, formulation, tiles]
        described = dict(
            text_hidden=text_hidden,
            width=config.vision_remember_hidden_size,
            interaction=interaction,
            formulation=formulation,
            tiles=tiles,
        )
        attention, num_tokens = module.cross_attention, int(inputs.positions.numel())
        flops = attention.formulation_flops(inputs, num_tokens)
        costs = attention.formulation_costs(inputs, num_tokens, device.type, dtype)
        auto_inputs = dataclasses.replace(inputs, formulation="auto")  # what `auto` runs, whatever this case forces
        described.update(
            formulation_gflop={k: v / 1e9 for k, v in flops.items()},
            formulation_cost_gflop={k: v / 1e9 for k, v in costs.items()},
            auto_picks="absorbed" if attention.uses_absorbed(auto_inputs, num_tokens, hidden) else "plain",
        )
        own = flops.get(formulation, 0)
        if own > min(flops.values()) and own / 1e9 > args.max_gflop:
            skipped.append({**described, "flop_ratio": own / min(flops.values())})
            continue
        row, output = instrument_case(config, module, tiles, hidden, inputs, device, dtype)
        row.update(described)
        with torch.inference_mode():
            for _ in range(warmup):
                module(hidden, inputs)
        cases.append(Case(row, module, hidden, build_args, inputs, output))
    progress.close()
    _compare_formulations(cases)
    return cases, skipped


def _compare_formulations(cases: list[Case]):
    """`plain_rel_diff` of each non-plain case: max |output - plain output| / max |plain VR update| (same weights
    and inputs; the dtype's rounding, not an equivalence test: the fp32 tests are that)."""
    plain = {_same_case(c.row): c for c in cases if c.row["formulation"] == "plain"}
    for case in cases:
        other = plain.get(_same_case(case.row))
        if case.row["formulation"] != "plain" and other is not None:
            update = (other.output - other.hidden).abs().max()
            case.row["plain_rel_diff"] = float((case.output - other.output).abs().max() / update)


def _same_case(row: dict) -> tuple:
    return row["text_hidden"], row["width"], row["interaction"], row["tiles"]


def _time_cases(cases: list[Case], repeats: int, n: int, device, dtype, seed: int, meta: dict) -> list[dict]:
    """Interleaved timed rounds, each also timing one plain n x n matmul (the contemporaneous arithmetic limit);
    returns the summarised rows and puts the limit into `meta`."""
    mat_a = torch.randn(n, n, device=device, dtype=dtype)
    mat_b = torch.randn(n, n, device=device, dtype=dtype)
    forward_s, build_s, spans = ([[] for _ in cases] for _ in range(3))
    matmul_limit = []
    with torch.inference_mode(), tqdm(total=repeats, desc="timed rounds (interleaved)", unit="round") as bar:
        for order in interleaved_rounds(len(cases), repeats, seed):
            matmul_limit.append(matmul_gflops(mat_a, mat_b, device))
            for i in order:
                case = cases[i]
                ran = case.row["auto_picks"] if case.row["formulation"] == "auto" else case.row["formulation"]
                with span_marks(case.module, Marks(device), ran) as marks:
                    forward_s[i].append(timed(partial(case.module, case.hidden, case.inputs), device)[0])
                spans[i].append(marks.totals_ms())
                build_s[i].append(timed(partial(VisionRemember.prepare_inputs, *case.build_args), device)[0])
            bar.update()
    limit = median(matmul_limit)
    meta["matmul_limit_gflops"] = limit
    meta["matmul_limit_runs"] = matmul_limit
    for i, case in enumerate(cases):
        summarise(case.row, forward_s[i], build_s[i], spans[i], limit)
        _print_row(case.row)
    return [case.row for case in cases]


def _print_row(row: dict):
    print(
        f"  D={row['text_hidden']:5d} d={row['width']:5d} {row['interaction']:11s} {row['formulation']:8s} "
        f"tiles={row['tiles']:3d} tokens={row['tokens']:5d} "
        f"VR={row['forward_ms']:8.2f} ms build={row['build_ms']:6.2f} ms GFLOP={row['gflop']:7.2f} "
        f"{row['achieved_gflops']:7.1f} GFLOP/s ({row['pct_of_matmul']:5.1f}% of matmul, "
        f"limit {row['limit_ms']:.2f} ms) peak+={fmt(row['peak_extra_mib'], '.0f')} MiB ops={row['dispatched_ops']}",
        flush=True,
    )


def _profile_largest(cases: list[Case], device):
    """Per-operator breakdown of the largest case of each (LLM width, VR width, interaction, formulation), into its
    row's `profile`."""
    largest: dict[tuple, Case] = {}
    for case in cases:
        key = (case.row["text_hidden"], case.row["width"], case.row["interaction"], case.row["formulation"])
        if key not in largest or case.row["tiles"] > largest[key].row["tiles"]:
            largest[key] = case
    for case in largest.values():
        case.row["profile"] = profile_breakdown(case.module, case.hidden, case.inputs, device)


# ---- what is measured per case ----
OP_CLASSES = {  # profiler op name fragment -> class (first match wins)
    "scaled_dot_product": "attention (SDPA)",
    "flash_attention": "attention (SDPA)",
    "attention": "attention (SDPA)",
    "addmm": "matmul",
    "aten::mm": "matmul",
    "bmm": "matmul",
    "aten::matmul": "matmul",
    "aten::linear": "matmul",
    "index": "gather/scatter",
    "gather": "gather/scatter",
    "scatter": "gather/scatter",
    "index_put": "gather/scatter",
    "layer_norm": "norm",
    "rms": "norm",
    "aten::pow": "norm",
    "aten::rsqrt": "norm",
    "aten::mean": "norm",
    "copy_": "copy/cast",
    "aten::to": "copy/cast",
    "_to_copy": "copy/cast",
    "contiguous": "copy/cast",
    "clone": "copy/cast",
    "cat": "copy/cast",
}
SUBMODULES = {
    "expand": ("input_norm", "expand_in", "expand_out"),
    "cross_attention": ("cross_attention",),
    "self_attention": ("self_attention",),
    "output": ("output_norm", "output_proj"),
}
# time spans inside one forward: the per-layer work on the whole feature map (plain formulation: LayerNorm + K/V
# projections of every cell; the absorbed formulation has none, its affine-free normalisation runs once per LLM
# forward in `VisionRememberInputs.build`), the rest of the cross-attention (queries, gather, attention, value and
# output projections; absorbed: the queries mapped to the feature width and the attended features projected once per
# token and head), the token self-attention
SPANS = {
    "feature_kv": ("cross_attention.feature_norm", "cross_attention.k_proj", "cross_attention.v_proj"),
    "cross_attention": ("cross_attention",),
    "self_attention": ("self_attention",),
}


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
def span_marks(module, marks: Marks, formulation: str):
    """Marks the `SPANS` of `module`'s forwards inside the block (sub-modules an interaction lacks are skipped; the
    `feature_kv` ones only in the plain formulation: the absorbed one folds their parameters without calling them,
    and refuses modules with hooks)."""
    with ExitStack() as stack:
        for span, names in SPANS.items():
            for name in names if span != "feature_kv" or formulation == "plain" else ():
                try:
                    sub = module.get_submodule(name)
                except AttributeError:
                    continue
                stack.enter_context(around_forward(sub, marks.start, lambda m, span=span: marks.stop(m, span)))
        yield marks


@contextmanager
def one_block(module):
    """Inside the block, `module`'s absorbed cross-attention runs in one block (its structure without the blocking
    loop, for the structural checks)."""
    attention = module.cross_attention
    before = attention.__dict__.get("absorbed_block_items")
    attention.absorbed_block_items = 2**62
    try:
        yield
    finally:
        if before is None:
            del attention.absorbed_block_items
        else:
            attention.absorbed_block_items = before


def _cross_attention_pass(module, inputs, device, dtype) -> OpRecorder:
    recorder = OpRecorder()
    with recorder, one_block(module):
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
    """Untimed passes of one case: FLOPs (per part), dispatched ops and shapes, peak memory; and the output. The
    absorbed formulation's blocks (`absorbed_blocks`, 1 for plain): the op counts and shapes of a blocked case are
    also recorded in one block (`dispatched_ops_one_block`; the cross-attention report is of one block)."""
    attention, num_tokens = module.cross_attention, int(inputs.positions.numel())
    absorbed = attention.uses_absorbed(inputs, num_tokens, hidden)
    blocks = len(attention.absorbed_block_slices(inputs, num_tokens, hidden.element_size())) if absorbed else 1
    with torch.inference_mode():
        with flop_counter() as counter, OpRecorder() as recorder:
            output = module(hidden, inputs)
        one_block_ops = None
        if blocks > 1:
            with OpRecorder() as unblocked, one_block(module):
                module(hidden, inputs)
            one_block_ops = sum(unblocked.ops.values())
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
        "absorbed_blocks": blocks,
        **({"dispatched_ops_one_block": one_block_ops} if one_block_ops is not None else {}),
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


# ---- report ----
PROFILE_CLASSES = ["matmul", "attention (SDPA)", "gather/scatter", "norm", "copy/cast", "other element-wise"]


def _groups(rows: list[dict]) -> dict[tuple[int, int, str, str], list[dict]]:
    """Rows by (LLM width, VR width, interaction, formulation), in first-seen order."""
    groups = {}
    for row in rows:
        groups.setdefault((row["text_hidden"], row["width"], row["interaction"], row["formulation"]), []).append(row)
    return groups


def _label(key: tuple) -> str:
    text_hidden, width, interaction, formulation = key
    return f"D={text_hidden} d={width} {interaction} {formulation}"


def _cross_attention_line(key: tuple, r: dict) -> tuple[str, bool]:
    interaction = key[2]
    calls = r["cross_attention_calls"]
    shapes = ", ".join(f"{c['op']} q{list(c.get('q', []))} k{list(c.get('k', []))}" for c in calls)
    line = (
        f"{_label(key)} cross-attention ({r['tiles']} tiles): "
        f"{len(calls)} attention call(s) [{shapes}], "
        f"kernels {r['cross_attention_kernels']}, gather ops {r['cross_attention_gather_ops']}, "
        f"score elements per tile {r['cross_attention_score_elements_per_tile']:,.0f} "
        f"(all heads; one cells x cells map per tile would be "
        f"{r['cross_attention_heads'] * (r['feature_cells'] // r['tiles']) ** 2:,})"
    )
    if interaction != "sela":
        return line, True
    kernels = r["cross_attention_kernels"]
    # all windows of all tiles in one attention: one fused SDPA (plain formulation) or one masked softmax between
    # batched matmuls (absorbed formulation, which the module picks when it needs fewer FLOPs)
    one_pass = len(calls) + kernels.get("_softmax", 0) == 1 and sum(r["cross_attention_gather_ops"].values()) <= 2
    no_square = not r["cross_attention_cells_x_cells_tensors"]
    line += (
        f"; one attention pass ({'fused SDPA' if calls else 'absorbed: one softmax'}): "
        f"{'yes' if one_pass else 'NO'}; cells x cells tensors: "
        f"{r['cross_attention_cells_x_cells_tensors'] or 'none'}; largest cross-attention tensor "
        f"{r['cross_attention_largest'][0]['shape']}"
    )
    return line, one_pass and no_square


def structural_checks(rows: list[dict]) -> dict:
    """Per (width, interaction): the op count does not grow with the tiles (in one block: the absorbed
    formulation's blocks, at most `MAX_ABSORBED_BLOCKS`, add their ops per block); the cross-attention of the largest
    case (SELA: one attention pass over all windows, no cells x cells tensor). `{"all_ok", "lines"}`."""
    lines, ok = [], True
    for key, group in _groups(rows).items():
        counts = sorted({r.get("dispatched_ops_one_block", r["dispatched_ops"]) for r in group})
        blocks = [r.get("absorbed_blocks", 1) for r in group]
        constant = len(counts) == 1 and max(blocks) <= MAX_ABSORBED_BLOCKS
        ok &= constant
        blocked = f" in one block (absorbed blocks {blocks})" if max(blocks) > 1 else ""
        lines.append(
            f"{_label(key)}: dispatched ops per VR forward{blocked} {counts} over tiles "
            f"{[r['tiles'] for r in group]} -> "
            f"{'constant (no per-tile/window loop)' if constant else 'GROWS'}"
        )
        line, passed = _cross_attention_line(key, group[-1])
        ok &= passed
        lines.append(line)
    return {"all_ok": ok, "lines": lines}


def results_table(rows: list[dict]) -> str:
    headers = [
        "D",
        "d",
        "interaction",
        "formulation",
        "tiles",
        "tokens",
        "VR ms",
        "feature K/V ms",
        "cross-attn ms",
        "self-attn ms",
        "build ms",
        "GFLOP",
        "GFLOP/s",
        "% of matmul",
        "limit ms",
        "peak MiB",
        "ops",
    ]
    body = []
    for r in rows:
        parts = r["time_ms_by_part"]
        body.append(
            [
                r["text_hidden"],
                r["width"],
                r["interaction"],
                r["formulation"],
                r["tiles"],
                r["tokens"],
                fmt(r["forward_ms"], ".2f"),
                fmt(parts["feature_kv"], ".2f"),
                fmt(parts["feature_kv"] + parts["cross_attention_rest"], ".2f"),
                fmt(parts["self_attention"], ".2f"),
                fmt(r["build_ms"], ".2f"),
                fmt(r["gflop"], ".2f"),
                fmt(r["achieved_gflops"], ".0f"),
                fmt(r["pct_of_matmul"], ".0f", "%"),
                fmt(r["limit_ms"], ".2f"),
                fmt(r["peak_extra_mib"], ".0f"),
                r["dispatched_ops"],
            ]
        )
    return markdown_table(headers, body)


def formulation_table(rows: list[dict], skipped: list[dict] = ()) -> str:
    """Absorbed against plain per (LLM width, VR width, interaction, tiles): VR forward and cross-attention times,
    their ratios, the cross-attention's FLOPs in each formulation (the module's count), which `auto` runs (by its
    cost estimate, `formulation_costs`) and, where `auto` ran too, its time over the faster of the two (the target:
    at most 1.05), the relative output difference. Skipped cases show `skipped`."""
    cases = {(r["text_hidden"], r["width"], r["interaction"], r["tiles"], r["formulation"]): r for r in rows}
    cases |= {(r["text_hidden"], r["width"], r["interaction"], r["tiles"], r["formulation"]): r for r in skipped}
    headers = [
        "D",
        "d",
        "interaction",
        "tiles",
        "absorbed ms",
        "plain ms",
        "absorbed / plain",
        "cross-attn ratio",
        "absorbed GFLOP",
        "plain GFLOP",
        "auto picks",
        "auto ms",
        "auto / best",
        "output rel. diff",
    ]
    body = []
    for key in dict.fromkeys(k[:4] for k in cases):
        absorbed, plain, auto = (cases.get((*key, f)) for f in ("absorbed", "plain", "auto"))
        if not (absorbed and plain):
            continue
        best = min((t for t in (absorbed.get("forward_ms"), plain.get("forward_ms")) if t), default=None)
        auto_ms = auto.get("forward_ms") if auto else None
        flops = absorbed["formulation_gflop"]
        times = [r.get("forward_ms") for r in (absorbed, plain)]
        cross = [
            r["time_ms_by_part"]["feature_kv"] + r["time_ms_by_part"]["cross_attention_rest"]
            if "time_ms_by_part" in r
            else None
            for r in (absorbed, plain)
        ]
        body.append(
            [
                *key,
                fmt(times[0], ".2f") if times[0] else "skipped",
                fmt(times[1], ".2f"),
                fmt(times[0] / times[1] if all(times) else None, ".2f"),
                fmt(cross[0] / cross[1] if all(cross) else None, ".2f"),
                fmt(flops["absorbed"], ".3g"),
                fmt(flops["plain"], ".3g"),
                absorbed["auto_picks"],
                fmt(auto_ms, ".2f"),
                fmt(auto_ms / best if auto_ms and best else None, ".3f"),
                fmt(absorbed.get("plain_rel_diff"), ".1e"),
            ]
        )
    return markdown_table(headers, body)


def profile_table(rows: list[dict]) -> str:
    headers = ["D", "d", "interaction", "formulation", "tiles"] + [f"{c} %" for c in PROFILE_CLASSES] + ["top op"]
    body = []
    for r in rows:
        if "profile" not in r:
            continue
        pct = r["profile"]["by_class_pct"]
        top = r["profile"]["top_ops"][0]
        body.append(
            [
                r["text_hidden"],
                r["width"],
                r["interaction"],
                r["formulation"],
                r["tiles"],
                *[fmt(pct.get(c, 0.0), ".0f") for c in PROFILE_CLASSES],
                f"{top['op']} ({top['pct']:.0f}%)",
            ]
        )
    return "Time by operator class (profiler self time, largest case):\n\n" + markdown_table(headers, body)


def plot(rows: list[dict], path: Path, meta: dict):
    """Left: one VR forward's time over the vision tokens; middle: absorbed / plain time (log scale); right: GFLOP/s
    as % of the plain matmul's. One tab20 colour pair per (LLM width, VR width, interaction): dark = absorbed (solid),
    light = plain (dashed)."""
    fig, (left, middle, right) = pyplot().subplots(1, 3, figsize=(18, 5.5))
    groups = _groups(rows)
    colours = pyplot().get_cmap("tab20").colors
    families = list(dict.fromkeys(key[:3] for key in groups))
    for key, group in groups.items():
        group = sorted(group, key=lambda r: r["tokens"])
        xs = [r["tokens"] for r in group]
        plain = key[3] == "plain"
        style = dict(
            marker="o",
            linestyle="--" if plain else "-",
            color=colours[(2 * families.index(key[:3]) + plain) % len(colours)],
        )
        left.plot(xs, [r["forward_ms"] for r in group], label=_label(key), **style)
        right.plot(xs, [r["pct_of_matmul"] for r in group], **style)
        twin = {r["tokens"]: r["forward_ms"] for r in groups.get((*key[:3], "plain"), [])}
        ratio = [(r["tokens"], r["forward_ms"] / twin[r["tokens"]]) for r in group if not plain and r["tokens"] in twin]
        if ratio:
            middle.plot(*zip(*ratio, strict=True), label=f"D={key[0]} d={key[1]} {key[2]}", **style)
    limit = meta["matmul_limit_gflops"]
    left.set(
        xlabel="vision tokens (144 per tile)",
        ylabel="one VR forward (ms, median)",
        xscale="log",
        yscale="log",
        title=f"Vision Remember, {meta['dtype']}, {meta['machine'].get('gpu', meta['machine']['cpu'])}",
    )
    middle.set(
        xlabel="vision tokens",
        ylabel="VR forward: absorbed / plain",
        xscale="log",
        yscale="log",
        title="formulations (same weights and inputs)",
    )
    middle.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    right.set(
        xlabel="vision tokens",
        ylabel="achieved GFLOP/s as % of plain matmul",
        xscale="log",
        title=f"arithmetic efficiency (matmul = {limit:.0f} GFLOP/s)",
    )
    for axis in (left, middle, right):
        axis.grid(True, alpha=0.3)
    left.legend(fontsize=6)
    middle.legend(fontsize=6)
    save_figure(fig, path)


def print_report(rows: list[dict], checks: dict, skipped: list[dict] = ()):
    print()
    print(results_table(rows))
    print("\nAbsorbed against plain (same weights and inputs; VR forward and cross-attention time ratios):\n")
    print(formulation_table(rows, skipped))
    print()
    print(profile_table(rows))
    print("\nChecks:")
    for line in checks["lines"]:
        print("  - " + line)


__all__ = ["PRESETS", "PROG", "build_parser", "run", "structural_checks"]
