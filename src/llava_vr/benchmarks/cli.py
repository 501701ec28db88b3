# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""`llava-vr bench`: the benchmarks.

    llava-vr bench model --preset cpu-small [...]              whole model: variants side by side
    llava-vr bench vision-remember --preset real [...]         one Vision Remember module alone
    llava-vr bench serving --preset cpu-small [...]            vLLM against Transformers generate (serve install)

`llava-vr bench NAME --help` lists a benchmark's options (the same as `benchmarks/benchmark_llava_vr.py` and
`benchmarks/benchmark_vision_remember.py`).
"""

import argparse
import importlib
import sys

# name -> (module of `run` / `main`, one-line help)
BENCHMARKS = {
    "model": ("llava_vr.benchmarks.model_benchmark",
              "whole model: TTFT, decode speed, peak memory, FLOPs of projector / VR variants"),
    "vision-remember": ("llava_vr.benchmarks.vision_remember_benchmark",
                        "one Vision Remember module alone: time, FLOPs, GFLOP/s vs matmul, structural checks"),
    "serving": ("llava_vr.benchmarks.serving",
                "vLLM against Transformers generate: throughput and TTFT at 1 / 4 / 16 concurrent requests"),
    "decode": ("llava_vr.benchmarks.decode_benchmark",
               "decode tokens/s with and without torch.compile (static cache), side by side"),
}


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
    module = importlib.import_module(BENCHMARKS[argv[0]][0])
    return module.main(argv[1:], prog=f"llava-vr bench {argv[0]}")


if __name__ == "__main__":
    raise SystemExit(main())
