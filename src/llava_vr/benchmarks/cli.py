# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""`llava-vr bench`: the benchmarks, and the options and start-up they share.

    llava-vr bench model --preset cpu-small [...]              whole model: projector / VR variants side by side
    llava-vr bench vision-remember --preset real [...]         one Vision Remember module alone
    llava-vr bench decode --preset cpu-small [...]             decode tokens/s with and without torch.compile
    llava-vr bench serving --preset cpu-small [...]            vLLM against Transformers generate (serve install)
    llava-vr bench video --preset cpu-small [...]              video TTFT: mlp vs pooling vs pooling + VR

`llava-vr bench NAME --help` lists a benchmark's options. Each benchmark module has `build_parser(prog)` (on
`benchmark_parser`: the options they share) and `run(argv, prog)`, which returns the payload of its JSON file.
This module imports torch only inside its functions, so that `llava-vr bench --help` (`build_parser`) needs none.
"""

import argparse
import importlib
import sys
from pathlib import Path

# name -> (module of `run`, one-line help)
BENCHMARKS = {
    "model": (
        "llava_vr.benchmarks.model_benchmark",
        "whole model: TTFT, decode speed, peak memory, FLOPs of projector / VR variants",
    ),
    "vision-remember": (
        "llava_vr.benchmarks.vision_remember_benchmark",
        "one Vision Remember module alone: time, FLOPs, GFLOP/s vs matmul, structural checks",
    ),
    "decode": (
        "llava_vr.benchmarks.decode_benchmark",
        "decode tokens/s with and without torch.compile (static cache), side by side",
    ),
    "serving": (
        "llava_vr.benchmarks.serving_benchmark",
        "vLLM against Transformers generate: throughput and TTFT at 1 / 4 / 16 concurrent requests",
    ),
    "video": (
        "llava_vr.benchmarks.video_benchmark",
        "video TTFT for 8 / 16 / 32 frames: mlp vs pooling vs pooling + VR, CLIP-L and SigLIP widths",
    ),
}


def benchmark_parser(
    prog: str,
    doc: str,
    presets: dict,
    stem: str,
    *,
    default_preset: str = "tiny",
    device: bool = True,
    repeats: tuple[str, ...] = ("--repeats",),
    repeats_default: int | None = None,
    repeats_help: str = "timed rounds (default: the preset's)",
    threads_default: int | None = None,
    seed: bool = True,
) -> argparse.ArgumentParser:
    """A benchmark's parser with the options every benchmark takes: `--preset`, `--device` (unless `device=False`:
    CPU only), `--dtype`, `--repeats` (spelled `repeats`), `--threads`, `--seed` (unless `seed=False`), `--output-dir`
    and `--tag` (the file name stem, default `stem`). The description is `doc`'s first paragraph."""
    from .machine import DTYPES
    from .reporting import DEFAULT_OUTPUT_DIR

    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(presets), default=default_preset)
    if device:
        parser.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (cuda when available)")
    parser.add_argument(
        "--dtype",
        choices=["auto", *DTYPES],
        default="auto",
        help="auto: bfloat16 on CUDA, the preset's CPU dtype on CPU",
    )
    parser.add_argument(*repeats, dest="repeats", type=int, default=repeats_default, help=repeats_help)
    parser.add_argument(
        "--threads",
        type=int,
        default=threads_default,
        help=f"torch CPU threads (default: {threads_default or 'available cores; 1 for tiny'})",
    )
    if seed:
        parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT_DIR,
        help=f"where the results go (default: {DEFAULT_OUTPUT_DIR}/ in the working directory)",
    )
    parser.add_argument("--tag", default=None, help=f"file name stem (default: {stem})")
    return parser


def run_benchmark(parser: argparse.ArgumentParser, presets: dict, body, argv: list[str] | None, prog: str):
    """A benchmark's `run`: parses `argv`, resolves its preset, device, dtype and thread count (tiny ops gain nothing
    from a second thread, and on a busy machine OpenMP barriers make them 100x slower), and returns
    `body(args, preset, device, dtype, threads, command)` with torch's thread count restored afterwards. A CUDA
    device on a machine without one is a usage error (exit 2), not a traceback."""
    from .machine import available_cores, resolve_device, resolve_dtype, torch_threads
    from .reporting import command_line

    args = parser.parse_args(argv)
    preset = presets[args.preset]
    try:
        device = resolve_device(getattr(args, "device", "cpu"))
    except ValueError as error:
        parser.error(str(error))
    dtype = resolve_dtype(args.dtype, device, preset["cpu_dtype"])
    with torch_threads(args.threads or preset.get("threads") or available_cores()) as threads:
        return body(args, preset, device, dtype, threads, command_line(prog, argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-vr bench", description="LLaVA-VR benchmarks.")
    names = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (_, help_text) in BENCHMARKS.items():
        names.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs `llava-vr bench NAME [options]` (`argv` without `bench`); 0 when the benchmark has written its files."""
    argv = list(sys.argv[1:] if argv is None else argv)
    build_parser().parse_args(argv[:1])  # --help, or a usage error for an unknown / missing name
    importlib.import_module(BENCHMARKS[argv[0]][0]).run(argv[1:], prog=f"llava-vr bench {argv[0]}")
    return 0


__all__ = ["BENCHMARKS", "benchmark_parser", "build_parser", "main", "run_benchmark"]

if __name__ == "__main__":
    raise SystemExit(main())
