# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Serving benchmark: vLLM against Transformers `generate` on the same model and requests, side by side in one run.

The same as `llava-vr bench serving`; the code is `llava_vr.benchmarks.serving`. Needs `pip install -e ".[serve]"`.

Examples:
    python benchmarks/benchmark_serving.py --preset cpu-small --concurrency 1 4 16
"""

from llava_vr.benchmarks.serving import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python benchmarks/benchmark_serving.py"))
