# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Micro-benchmark of one Vision Remember (VR) module alone: interactions, widths and formulations side by side.

Builds `VisionRemember` and `VisionRememberInputs` directly (random weights, synthetic hidden states, multi-level
features, saliency and token cells: one image of `tiles` tiles of 12x12 = 144 tokens over 24x24 = 576-cell feature
maps, no newline tokens). For every LLM width x VR width (`real`: 3072, the paper's, and 1024) x interaction of
`VR_INTERACTIONS` x cross-attention formulation (`absorbed`: the K/V projections moved onto the queries and the
attended features; `plain`: keys and values projected for every feature cell) x tile count it measures:

- time of one VR forward (median after warm-up), split into the plain formulation's per-layer work on the whole
  feature map (LayerNorm + K/V projections of every cell; none in the absorbed one), the rest of the cross-attention,
  the token self-attention and the rest; and of `VisionRememberInputs.build` (once per LLM forward, shared by every
  VR layer; it holds the absorbed formulation's feature normalisation);
- absorbed against plain on the same weights and inputs: time ratios, the cross-attention's FLOPs in each (the
  module's own count, by which `auto` chooses) and the relative output difference;
- peak memory of the forward (tensor memory above the inputs; see `memory.PeakMemory`);
- FLOPs (`FlopCounterMode`, per sub-module) and achieved GFLOP/s, next to a plain matmul's GFLOP/s on the same machine
  and dtype (the "arithmetic limit"): `% of matmul` = achieved / limit, `limit ms` = FLOPs / limit;
- where the time goes (profiler, per operator class) for the largest case;
- structural checks, evaluated from the dispatched operators (a `TorchDispatchMode` records every op and its output
  shape): the number of dispatched ops does not grow with the tile count (no Python loop over tiles or windows), the
  number of attention / gather ops per cross-attention, and the largest intermediate tensor (nothing 576 x 576 per
  tile for SELA).

A case whose cross-attention needs more than `--max-gflop` GFLOP in its formulation and more than in the other (the
absorbed image-wide `global` at many tiles: seconds per call) is skipped and listed.
Writes `<stem>.json`, `<stem>.csv` and `<stem>.png` (stem `vision_remember_<preset>_<device>` unless `--tag`) to
`--output-dir` (default `benchmark_results/`; the plot needs matplotlib, the `bench` extra).

Examples:
    llava-vr bench vision-remember --preset tiny
    llava-vr bench vision-remember --preset real            # CPU: bfloat16, 2 / 5 / 10 tiles
    llava-vr bench vision-remember --preset real --device cuda
"""

import argparse
import itertools
import random
from pathlib import Path

import torch
from tqdm.auto import tqdm

from llava_vr.registries_llava_vr import VR_INTERACTIONS
from llava_vr.registries_llava_vr import FORMULATIONS
from llava_vr.vision_remember_llava_vr import VisionRemember

from .flops import matmul_peak_gflops
from .machine import (
    DTYPES,
    dtype_name,
    loadavg,
    machine_info,
    run_benchmark,
)
from .memory import PeakMemory
from .reporting import (
    DEFAULT_OUTPUT_DIR,
    MATPLOTLIB_MISSING,
    fmt,
    plotting_available,
    utc_timestamp,
    write_csv,
    write_json,
)
from .timing import Marks, median, timed
from .vision_remember_cases import PRESETS, TEXT_TOKENS, Case, build_config, build_module, synthetic_inputs
from .vision_remember_probes import instrument_case, profile_breakdown, span_marks, summarise
from .vision_remember_report import plot, print_report, structural_checks

PROG = "python benchmarks/benchmark_vision_remember.py"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto")
    parser.add_argument("--interactions", nargs="+", choices=list(VR_INTERACTIONS), default=list(VR_INTERACTIONS))
    parser.add_argument("--tiles", nargs="+", type=int, default=None)
    parser.add_argument("--text-hidden", nargs="+", type=int, default=None, help="LLM widths (default: the preset's)")
    parser.add_argument("--widths", nargs="+", type=int, default=None,
                        help="VR widths (default: the preset's; real: 3072, the paper's, and 1024)")
    parser.add_argument("--formulations", nargs="+", choices=list(FORMULATIONS), default=None,
                        help="cross-attention formulations (default: absorbed plain)")
    parser.add_argument("--max-gflop", type=float, default=500.0,
                        help="skip a case whose cross-attention needs more than this many GFLOP in its formulation "
                             "and more than in the other (image-wide global absorbed at many tiles: seconds per call; "
                             "default 500)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-profile", action="store_true", help="skip the per-operator time breakdown")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                        help=f"where the results go (default: {DEFAULT_OUTPUT_DIR}/ in the working directory)")
    parser.add_argument("--tag", default=None, help="file name stem (default: vision_remember_<preset>_<device>)")
    return parser


def run(argv: list[str] | None = None, prog: str = PROG) -> dict:
    """Runs the benchmark; returns the payload written to the JSON file. Restores torch's thread count."""
    return run_benchmark(build_parser(prog), PRESETS, _run, argv, prog)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    run(argv, prog)
    return 0


def _run(args, preset: dict, device, dtype, threads: int, command: str) -> dict:
    repeats = args.repeats or preset["repeats"]
    warmup = args.warmup if args.warmup is not None else preset["warmup"]
    stem = args.tag or f"vision_remember_{args.preset}_{device.type}"
    out_dir = Path(args.output_dir)
    print(f"# Vision Remember micro-benchmark: preset={args.preset} device={device} dtype={dtype_name(dtype)} "
          f"threads={threads}", flush=True)
    print(f"  plan: LLM widths {args.text_hidden or preset['text_hidden']} x VR widths "
          f"{args.widths or preset['widths']} x {len(args.interactions)} interactions x formulations "
          f"{args.formulations or preset['formulations']} x tiles {args.tiles or preset['tiles']} = "
          f"{len(_case_keys(args, preset))} cases (less those over --max-gflop {args.max_gflop:g}); per case "
          f"one instrumented pass and {warmup} warm-up, then {repeats} timed rounds; results to {out_dir / stem}.*",
          flush=True)
    plots = plotting_available()
    if not plots:
        print(f"  {MATPLOTLIB_MISSING}", flush=True)
    print(f"  plain matmul probe (n = {', '.join(map(str, preset['matmul_sizes']))}) ...", flush=True)
    with torch.inference_mode():
        peak = matmul_peak_gflops(device, dtype, preset["matmul_sizes"])
    meta = _meta(args, preset, device, dtype, threads, command, repeats, warmup, peak)
    print(f"  plain matmul: {peak['gflops']:.0f} GFLOP/s (n={peak['size']})", flush=True)

    cases, skipped = _instrument_cases(args, preset, device, dtype, warmup)
    for case in skipped:
        print(f"  skipped d={case['width']} {case['interaction']} {case['formulation']} tiles={case['tiles']}: "
              f"{case['formulation_gflop'][case['formulation']]:.0f} GFLOP, {case['flop_ratio']:.1f}x the FLOPs of "
              f"{case['auto_picks']}", flush=True)
    rows = _time_cases(cases, repeats, peak["size"], device, dtype, meta)
    if not args.no_profile:
        _profile_largest(cases, device)
    del cases

    checks = structural_checks(rows)
    payload = {"meta": meta, "checks": checks, "results": rows, "skipped": skipped}
    meta["loadavg_at_end"] = loadavg()
    write_json(out_dir / f"{stem}.json", payload)
    write_csv(out_dir / f"{stem}.csv", rows)
    print_report(rows, checks, skipped)
    if plots:
        plot(rows, out_dir / f"{stem}.png", meta)
    print(f"\nwrote {out_dir / stem}.json, .csv" + (", .png" if plots else f" (no plot: {MATPLOTLIB_MISSING})"))
    return payload


def _meta(args, preset, device, dtype, threads, command, repeats, warmup, peak) -> dict:
    return {
        "benchmark": "benchmark_vision_remember",
        "preset": args.preset,
        "dtype": dtype_name(dtype),
        "repeats": repeats,
        "warmup": warmup,
        "timestamp": utc_timestamp(),
        "command": command,
        "machine": machine_info(device, threads),
        "matmul_probe": peak,
        "memory_method": PeakMemory.describe(device),
        "flops_method": "torch.utils.flop_counter.FlopCounterMode (+ CPU fused SDPA); matmul/attention only",
        "protocol": "per case one instrumented pass (FLOPs, ops, memory) and `warmup` forwards; then `repeats` rounds "
                    "over all cases in a shuffled order, each round also timing one plain n x n matmul (the limit is "
                    "its median GFLOP/s over the rounds, measured interleaved with the cases)",
        "setup": {"vision_hidden": preset["vision_hidden"], "levels": 3, "heads": preset["vision_heads"],
                  "feature_grid": preset["image_size"] // preset["patch_size"], "text_tokens": TEXT_TOKENS,
                  "max_gflop": args.max_gflop},
    }


def _case_keys(args, preset) -> list[tuple]:
    """`(LLM width, VR width, interaction, formulation, tiles)` of every case, in run order."""
    return list(itertools.product(args.text_hidden or preset["text_hidden"], args.widths or preset["widths"],
                                  args.interactions, args.formulations or preset["formulations"],
                                  args.tiles or preset["tiles"]))


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
            modules[text_hidden, width, interaction] = build_module(config, device, dtype)
        module = modules[text_hidden, width, interaction]
        if (text_hidden, tiles) not in hidden_states:
            hidden_states[text_hidden, tiles] = synthetic_inputs(config, tiles, device, dtype)
        hidden, build_args = hidden_states[text_hidden, tiles]
        build_args = (*build_args[:-1], config)
        if (text_hidden, interaction, formulation, tiles) not in built:
            with torch.inference_mode():
                built[text_hidden, interaction, formulation, tiles] = VisionRemember.prepare_inputs(*build_args)
        inputs = built[text_hidden, interaction, formulation, tiles]
        described = dict(text_hidden=text_hidden, width=config.vision_remember_hidden_size, interaction=interaction,
                         formulation=formulation, tiles=tiles)
        flops = module.cross_attention.formulation_flops(inputs, int(inputs.positions.numel()))
        described.update(formulation_gflop={k: v / 1e9 for k, v in flops.items()},
                         auto_picks=min(flops, key=flops.get))
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


def _time_cases(cases: list[Case], repeats: int, n: int, device, dtype, meta: dict) -> list[dict]:
    """Interleaved timed rounds, each also timing one plain n x n matmul (the contemporaneous arithmetic limit);
    returns the summarised rows and puts the limit into `meta`."""
    mat_a = torch.randn(n, n, device=device, dtype=dtype)
    mat_b = torch.randn(n, n, device=device, dtype=dtype)
    forward_s, build_s, spans = ([[] for _ in cases] for _ in range(3))
    matmul_gflops = []
    order = list(range(len(cases)))
    with torch.inference_mode(), tqdm(total=repeats, desc="timed rounds (interleaved)", unit="round") as bar:
        for round_index in range(repeats):
            random.Random(round_index).shuffle(order)
            matmul_gflops.append(2 * n**3 / timed(lambda: mat_a @ mat_b, device) / 1e9)
            for i in order:
                case = cases[i]
                with span_marks(case.module, Marks(device)) as marks:
                    forward_s[i].append(timed(lambda: case.module(case.hidden, case.inputs), device))
                spans[i].append(marks.totals_ms())
                build_s[i].append(timed(lambda: VisionRemember.prepare_inputs(*case.build_args), device))
            bar.update()
    limit = median(matmul_gflops)
    meta["matmul_limit_gflops"] = limit
    meta["matmul_limit_runs"] = matmul_gflops
    for i, case in enumerate(cases):
        summarise(case.row, forward_s[i], build_s[i], spans[i], limit)
        _print_row(case.row)
    return [case.row for case in cases]


def _print_row(row: dict):
    print(f"  D={row['text_hidden']:5d} d={row['width']:5d} {row['interaction']:11s} {row['formulation']:8s} "
          f"tiles={row['tiles']:3d} tokens={row['tokens']:5d} "
          f"VR={row['forward_ms']:8.2f} ms build={row['build_ms']:6.2f} ms GFLOP={row['gflop']:7.2f} "
          f"{row['achieved_gflops']:7.1f} GFLOP/s ({row['pct_of_matmul']:5.1f}% of matmul, "
          f"limit {row['limit_ms']:.2f} ms) peak+={fmt(row['peak_extra_mib'], '.0f')} MiB ops={row['dispatched_ops']}",
          flush=True)


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


__all__ = ["PROG", "build_parser", "main", "run"]
