# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""LLaVA-VR benchmarks (the `llava-vr bench` command) and the instruments they share.

Benchmarks: `model_benchmark` (the whole model, projector / Vision Remember variants side by side) and
`vision_remember_benchmark` (one Vision Remember module alone); `cli.main` dispatches `llava-vr bench <name>`.

Shared, for any benchmark (a serving benchmark included):

- `machine`: `resolve_device`, `resolve_dtype`, `DTYPES`, `torch_threads`, `synchronize`, `machine_info`, `loadavg`;
- `timing`: `timed`, `median`, `Marks` (spans inside one timed call), `around_forward` (callbacks around a module);
- `memory`: `PeakMemory`, `process_peak_rss_gib`;
- `flops`: `flop_counter`, `module_flops`, `matmul_peak_gflops`;
- `dispatch`: `OpCounter`, `OpRecorder` (aten ops dispatched by a call);
- `reporting`: `write_json`, `write_csv`, `markdown_table`, `fmt`, `utc_timestamp`, `command_line`, `pyplot`,
  `save_figure`.

Every result file records its methods in `meta`: times are `time.perf_counter` wall clock, synchronised on CUDA;
peak memory is tensor memory above what was resident before the call (`PeakMemory`); FLOPs come from
`torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions, attention only).
"""
