# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Serving benchmark (`llava-vr bench serving`): vLLM against Transformers `generate` on the same model and the same
requests, side by side in one run, for pooling and pooling + Vision Remember. Needs the serving install
(`pip install -e ".[serve]"`).

Each variant is saved once (random weights at the preset's shapes, the tiny offline tokenizer, Transformers' CLIP
AnyRes image processor); every engine then runs in a fresh child process of its own, one after the other, on that
folder (`serving_engines.py` says what is measured). Ratios compare engines within this run only.
"""

import argparse
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from .machine import machine_info, resolve_device
from .model_variants import PRESETS, VARIANTS, build_config, build_model
from .reporting import DEFAULT_OUTPUT_DIR, command_line, markdown_table, pyplot, save_figure, utc_timestamp
from .reporting import write_csv, write_json
from .serving_engines import ENGINES

DEFAULT_VARIANTS = ["adaptive_avg_pool", "adaptive_avg_pool+sela"]
# the model benchmark's presets; vLLM's CPU attention needs a head size of at least 32, so the tiny LLM (64 wide)
# gets 2 query heads here instead of 4
SERVING_PRESETS = {
    **PRESETS,
    "tiny": {**PRESETS["tiny"], "text": {**PRESETS["tiny"]["text"], "num_attention_heads": 2, "num_key_value_heads": 1}},
}
QUESTION = "Describe the document in detail."


def parse_args(argv=None, prog=None):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(SERVING_PRESETS), default="cpu-small")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=DEFAULT_VARIANTS)
    parser.add_argument("--engines", nargs="+", choices=sorted(ENGINES), default=sorted(ENGINES))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--max-tokens", type=int, default=128,
                        help="generated tokens per request (EOS ignored; a described document or a short answer)")
    parser.add_argument("--image-size", nargs=2, type=int, default=[336, 672], metavar=("HEIGHT", "WIDTH"),
                        help="every request's image (336 x 672: base tile + 1 x 2 AnyRes crops)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="default: the preset's CPU dtype (bfloat16 at real widths)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="measurements of the single-request level (fresh images each; medians reported)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each engine")
    parser.add_argument("--vllm-omp-bind", default="auto",
                        help="VLLM_CPU_OMP_THREADS_BIND for vLLM: 'auto' (vLLM's default: one pinned thread per "
                             "physical core, one core reserved for its scheduler) or 'nobind' (--threads unpinned "
                             "threads, as Transformers gets)")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                        help=f"where the results go (default: {DEFAULT_OUTPUT_DIR}/ in the working directory)")
    return parser.parse_args(argv)


def save_variant(preset: dict, variant: str, folder: Path, dtype: str) -> Path:
    """The variant at the preset's shapes with random weights, saved with its processor (a complete model folder)."""
    import torch

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


def run_engine(engine: str, folder: Path, args, dtype: str) -> dict:
    """One engine in a fresh process (no state, threads or caches shared with the other engine)."""
    extra = {"omp_bind": args.vllm_omp_bind} if engine == "vllm" else {}
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        future = pool.submit(ENGINES[engine], str(folder), QUESTION, tuple(args.image_size), sorted(args.concurrency),
                             args.max_tokens, args.threads, dtype, args.rounds, **extra)
        return future.result()


def collect_rows(args, preset: dict, dtype: str, workdir: Path) -> list[dict]:
    rows = []
    for variant in args.variants:
        folder = save_variant(preset, variant, workdir / variant.replace("+", "_"), dtype)
        for engine in args.engines:
            for mode, by_concurrency in run_engine(engine, folder, args, dtype).items():
                for concurrency, numbers in by_concurrency.items():
                    rows.append({"variant": variant, "engine": mode, "concurrency": concurrency, **numbers})
                    print(f"{variant:28s} {mode:10s} C={concurrency:<3d} {numbers['output_tokens_per_s']:8.1f} tok/s"
                          f"  TTFT {numbers['ttft_mean_s'] or float('nan'):.3f} s", flush=True)
    return rows


def add_ratios(rows: list[dict]) -> list[dict]:
    """Per variant and concurrency: vLLM throughput / each Transformers mode's, and TTFT of vLLM / Transformers."""
    index = {(r["variant"], r["engine"], r["concurrency"]): r for r in rows}
    ratios = []
    for (variant, engine, concurrency), row in index.items():
        if engine != "vllm":
            continue
        for mode in ("sequential", "batched"):
            other = index.get((variant, mode, concurrency))
            if other is None:
                continue
            ratios.append({
                "variant": variant, "concurrency": concurrency, "against": f"transformers {mode}",
                "throughput_ratio": row["output_tokens_per_s"] / other["output_tokens_per_s"],
                "ttft_ratio": (row["ttft_mean_s"] / other["ttft_mean_s"])
                if row["ttft_mean_s"] and other["ttft_mean_s"] else None,
            })
    return ratios


def tables(rows: list[dict], ratios: list[dict]) -> str:
    numbers = markdown_table(
        ["variant", "engine", "concurrent requests", "output tok/s", "requests/s", "TTFT mean (s)", "TTFT max (s)"],
        [[r["variant"], r["engine"], r["concurrency"], r["output_tokens_per_s"], r["requests_per_s"],
          r["ttft_mean_s"], r["ttft_max_s"]] for r in rows],
    )
    relative = markdown_table(
        ["variant", "concurrent requests", "vLLM against", "throughput ×", "TTFT ratio (lower is better)"],
        [[r["variant"], r["concurrency"], r["against"], r["throughput_ratio"], r["ttft_ratio"]] for r in ratios],
    )
    return numbers + "\n\n" + relative


def plot(rows: list[dict], path: Path):
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
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


def installed_version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def main(argv=None, prog=None) -> int:
    args = parse_args(argv, prog)
    preset = SERVING_PRESETS[args.preset]
    dtype = args.dtype or preset.get("cpu_dtype", "float32")
    with tempfile.TemporaryDirectory(prefix="llava-vr-serving-") as workdir:
        rows = collect_rows(args, preset, dtype, Path(workdir))
    ratios = add_ratios(rows)
    report = tables(rows, ratios)
    print(report)
    stem = args.output_dir / f"serving_{args.preset}_cpu"
    write_json(stem.with_suffix(".json"), {
        "vllm": installed_version("vllm-cpu") or installed_version("vllm"),
        "command": command_line(prog or "llava-vr bench serving", argv), "timestamp": utc_timestamp(),
        "machine": machine_info(resolve_device("cpu"), args.threads), "preset": args.preset, "dtype": dtype,
        "image_size": args.image_size, "max_tokens": args.max_tokens, "rounds_at_one_request": args.rounds,
        "threads": args.threads,
        "vllm_omp_bind": args.vllm_omp_bind, "rows": rows, "ratios": ratios,
    })
    write_csv(stem.with_suffix(".csv"), rows)
    stem.with_suffix(".md").write_text(report + "\n")
    try:
        plot(rows, stem.with_suffix(".png"))
    except ImportError:
        print("no plot: matplotlib is not installed (pip install -e \".[serve,bench]\")")
    return 0


__all__ = ["main", "parse_args"]
