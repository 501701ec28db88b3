# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""`llava-vr bench decode`: decode speed of a LLaVA-VR model with and without `torch.compile`, side by side.

A decode step is a plain Qwen2 step (Vision Remember and the tower run at the prefill only), so Transformers' static
cache and compiled decode step work as for the stock model. Measured through `generate()` as a user runs it, on one
image plus a text prompt (batch 1, greedy), in three modes:

- `dynamic`: the default `DynamicCache`, eager;
- `static`: `cache_implementation="static"`, eager (`disable_compile=True`);
- `static+compile`: the static cache with the decode step compiled by Transformers (`compile_config`: `torch.compile`
  of the forward, `fullgraph=True`, `dynamic=False`; forced on CPU with `_compile_all_devices`, as Transformers' own
  tests do; mode `reduce-overhead` on CUDA, `default` on CPU).

Decode tokens/s = 1 / the median decode step: per round, one `generate()` call of `decode_tokens + 1` new tokens
(exactly that many: `min_new_tokens` = `max_new_tokens`), each step timed between consecutive new tokens by a
streamer (`generate()` synchronises every step anyway), so the prefill and the image encoding stay out; the median
over all steps of `--repeats` rounds (robust to bursts of load on a shared machine), the modes interleaved in a
shuffled order per round; `decode_tok_s_round_mean`: the same from the median round's mean step. Every call asks for
the same number of new tokens, so the static cache has one shape and the compiled step is traced once. Each mode's
first call is a warm-up; for `static+compile` it includes the compilation (`first_call_s`). The greedy tokens of all
modes are compared. Writes `<stem>.json` and `<stem>.csv` (stem `llava_vr_decode_<preset>_<device>` unless `--tag`)
to `--output-dir` (default `benchmark_results/`, git-ignored).

Examples:
    llava-vr bench decode --preset tiny
    llava-vr bench decode --preset cpu-small --decode-tokens 32
"""

import time

import torch
from transformers import CompileConfig

from .cli import benchmark_parser, run_benchmark
from .machine import dtype_name, synchronize
from .model_variants import PRESETS, VARIANTS, VR_MAIN, build_config, build_model, config_summary, make_inputs
from .reporting import markdown_table, result_meta, write_results
from .timing import StepClock, interleaved_rounds, median

PROG = "llava-vr bench decode"
MODES = ("dynamic", "static", "static+compile")


def build_parser(prog: str = PROG):
    parser = benchmark_parser(
        prog,
        __doc__,
        PRESETS,
        "llava_vr_decode_<preset>_<device>",
        repeats_default=3,
        repeats_help="rounds, each running every mode once (default 3)",
    )
    parser.add_argument("--variant", choices=list(VARIANTS), default=VR_MAIN, help=f"default: {VR_MAIN}")
    parser.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    parser.add_argument("--crops", type=int, default=1, help="AnyRes crops of the image")
    parser.add_argument("--text-tokens", type=int, default=32, help="text tokens around the image")
    parser.add_argument("--decode-tokens", type=int, default=32, help="decode steps timed per generate() call")
    return parser


def compile_config(device: torch.device) -> CompileConfig:
    """Transformers' compile settings for the decode step, forced on any device."""
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    config = CompileConfig(fullgraph=True, dynamic=False, mode=mode)
    config._compile_all_devices = True
    return config


def generate_kwargs(mode: str, new_tokens: int, compile_settings: CompileConfig) -> dict:
    """`generate()` arguments of one call in `mode`. Every call asks for the same number of new tokens, so the static
    cache Transformers keeps between calls has one shape and the compiled step is traced once."""
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    if mode == "dynamic":
        return kwargs
    if mode == "static":
        return kwargs | dict(cache_implementation="static", disable_compile=True)
    return kwargs | dict(cache_implementation="static", compile_config=compile_settings)


class ModeRunner:
    """Runs `generate()` calls of one mode on one prompt: `call(new_tokens)` -> `(prefill_s, step_s, output ids)`,
    `step_s` the `new_tokens - 1` decode steps' times (between consecutive new tokens)."""

    def __init__(self, model, inputs: dict, mode: str, compile_settings, device):
        self.model, self.inputs, self.mode = model, inputs, mode
        self.compile_settings, self.device = compile_settings, device

    def call(self, new_tokens: int) -> tuple[float, list[float], torch.Tensor]:
        kwargs = generate_kwargs(self.mode, new_tokens, self.compile_settings)
        clock = StepClock()
        synchronize(self.device)
        start = time.perf_counter()
        output = self.model.generate(**self.inputs, **kwargs, streamer=clock)
        token_times = clock.times[1:]  # times[0]: the prompt
        steps = [b - a for a, b in zip(token_times[:-1], token_times[1:], strict=True)]
        return token_times[0] - start, steps, output


def measure(runners: dict, args) -> list[dict]:
    """A warm-up call per mode (for `static+compile` with the compilation), then `repeats` rounds, each running every
    mode once in a shuffled order (background load hits all modes alike). Per mode: the median decode step over all
    rounds' steps (robust to bursts of load on a shared machine), the median of the rounds' mean steps, the median
    prefill, and the warm-up call's new tokens."""
    new_tokens = args.decode_tokens + 1
    first, tokens, rounds = {}, {}, {mode: [] for mode in runners}
    for mode, runner in runners.items():
        start = time.perf_counter()
        *_, output = runner.call(new_tokens)
        first[mode] = time.perf_counter() - start
        tokens[mode] = output[0, runner.inputs["input_ids"].shape[1] :].tolist()
        print(f"  warm-up {mode:15s} {first[mode]:.1f} s", flush=True)
    modes = list(runners)
    for order in interleaved_rounds(len(modes), args.repeats, args.seed):
        for i in order:
            rounds[modes[i]].append(runners[modes[i]].call(new_tokens)[:2])
    rows = []
    for mode in runners:
        step_s = median([step for _, steps in rounds[mode] for step in steps])
        rows.append(
            {
                "mode": mode,
                "first_call_s": first[mode],
                "prefill_s": median([prefill for prefill, _ in rounds[mode]]),
                "decode_ms_per_token": 1000 * step_s,
                "decode_tok_s": 1 / step_s,
                "decode_tok_s_round_mean": 1 / median([sum(steps) / len(steps) for _, steps in rounds[mode]]),
                "rounds_steps_s": [steps for _, steps in rounds[mode]],
                "tokens": tokens[mode],
            }
        )
    return rows


def run(argv: list[str] | None = None, prog: str = PROG) -> dict:
    """Runs the benchmark; returns the payload written to the JSON file. Restores torch's thread count."""
    return run_benchmark(build_parser(prog), PRESETS, _run, argv, prog)


def _run(args, preset: dict, device, dtype, threads: int, command: str) -> dict:
    config = build_config(preset, args.variant, args.attn)
    model = build_model(config, device, dtype, args.seed)
    model.generation_config.eos_token_id = None  # random weights: never stop early
    model.generation_config.pad_token_id = 0
    inputs, _ = make_inputs(model, args.crops, args.text_tokens, device, dtype, args.seed)
    stem = args.tag or f"llava_vr_decode_{args.preset}_{device.type}"
    print(
        f"# LLaVA-VR decode benchmark: preset={args.preset} variant={args.variant} device={device} "
        f"dtype={dtype_name(dtype)} threads={threads}; prompt {inputs['input_ids'].shape[1]} tokens, "
        f"{args.decode_tokens} decode tokens, {args.repeats} repeats",
        flush=True,
    )
    settings = compile_config(device)
    rows = measure({mode: ModeRunner(model, inputs, mode, settings, device) for mode in MODES}, args)
    by_mode = {row["mode"]: row for row in rows}
    summary = _summary(by_mode)
    meta = result_meta(
        "decode_benchmark",
        args.preset,
        dtype,
        device,
        threads,
        command,
        variant=args.variant,
        attn_implementation=args.attn,
        crops=args.crops,
        text_tokens=args.text_tokens,
        prompt_tokens=int(inputs["input_ids"].shape[1]),
        decode_tokens=args.decode_tokens,
        repeats=args.repeats,
        compile_config=settings.to_dict(),
        config=config_summary(config),
        method="decode tokens/s = 1 / median decode step; steps timed between consecutive new tokens of "
        "generate(max_new_tokens = decode_tokens + 1) by a streamer, all rounds' steps; modes interleaved",
    )
    payload = {"meta": meta, "summary": summary, "results": rows}
    print(
        "\n"
        + markdown_table(
            ["mode", "decode tok/s", "ms / token", "prefill s", "first call s"],
            [[r["mode"], r["decode_tok_s"], r["decode_ms_per_token"], r["prefill_s"], r["first_call_s"]] for r in rows],
        )
    )
    print(
        f"\ncompiled / eager (static cache): {summary['compile_speedup_vs_static']}x; compiled / dynamic cache: "
        f"{summary['compile_speedup_vs_dynamic']}x; same tokens in every mode: {summary['tokens_equal']}"
    )
    write_results(args.output_dir, stem, payload, rows)
    return payload


def _summary(by_mode: dict) -> dict:
    def ratio(a, b):
        fast, slow = by_mode[a]["decode_tok_s"], by_mode[b]["decode_tok_s"]
        return round(fast / slow, 3) if fast and slow else None

    tokens = [row["tokens"] for row in by_mode.values()]
    return {
        "compile_speedup_vs_static": ratio("static+compile", "static"),
        "compile_speedup_vs_dynamic": ratio("static+compile", "dynamic"),
        "static_vs_dynamic": ratio("static", "dynamic"),
        "tokens_equal": all(t == tokens[0] for t in tokens),
    }


__all__ = ["MODES", "PROG", "build_parser", "run"]
