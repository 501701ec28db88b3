# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""LLaVA-VR benchmarks (the `llava-vr bench` command) and the instruments they share.

Four benchmarks, one module each, with `build_parser(prog)` and `run(argv, prog)`:

- `model_benchmark`: the whole model, projector / Vision Remember variants side by side (TTFT, decode, memory, FLOPs);
- `vision_remember_benchmark`: one Vision Remember module alone (time, FLOPs, GFLOP/s against a matmul, checks);
- `decode_benchmark`: decode tokens/s with and without `torch.compile` (static cache);
- `serving_benchmark`: vLLM against Transformers `generate` (the serve install).

`model_variants` holds the models the model, decode and serving benchmarks build (variants, presets, inputs);
`cli` the `llava-vr bench` dispatch and the options every benchmark takes (`benchmark_parser`, `run_benchmark`).
Shared instruments:

- `machine`: `resolve_device`, `resolve_dtype`, `DTYPES`, `torch_threads`, `synchronize`, `machine_info`,
  `quiet_profile` (the PyTorch profiler without Kineto's console lines);
- `timing`: `timed`, `median`, `interleaved_rounds`, `Marks` (spans inside one timed call), `StepClock` (the tokens
  of a `generate()` call), `around_forward`;
- `memory`: `PeakMemory`, `process_peak_rss_gib`;
- `flops`: `flop_counter`, `module_flops`, `matmul_peak_gflops`, `OpCounter`, `OpRecorder` (dispatched aten ops);
- `reporting`: `result_meta`, `write_results`, `markdown_table`, `fmt`, `pyplot`, `save_figure`.

Every result file records its methods: times are `time.perf_counter` wall clock, synchronised on CUDA; peak memory
is tensor memory above what was resident before the call (`PeakMemory`); FLOPs come from
`torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions, attention only).
"""
