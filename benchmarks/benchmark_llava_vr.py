# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""End-to-end LLaVA-VR efficiency benchmark: projector / Vision Remember variants side by side in one process.

The same as `llava-vr bench model`; the code is `llava_vr.benchmarks.model_benchmark`, the method
`benchmarks/README.md`.

Examples:
    python benchmarks/benchmark_llava_vr.py --preset tiny
    python benchmarks/benchmark_llava_vr.py --preset cpu-small
    python benchmarks/benchmark_llava_vr.py --preset qwen2-1.5b --device cuda --attn sdpa
"""

from llava_vr.benchmarks.model_benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
