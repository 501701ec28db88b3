# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Micro-benchmark of one Vision Remember (VR) module alone: `sela` vs `deformable` vs `global`.

The same as `llava-vr bench vision-remember`; the code is `llava_vr.benchmarks.vision_remember_benchmark`, the method
`benchmarks/README.md`.

Examples:
    python benchmarks/benchmark_vision_remember.py --preset tiny
    python benchmarks/benchmark_vision_remember.py --preset real            # CPU: bfloat16, 1..16 tiles
    python benchmarks/benchmark_vision_remember.py --preset real --device cuda
"""

from llava_vr.benchmarks.vision_remember_benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
