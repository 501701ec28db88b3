# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The visual-forgetting experiment's results: every finished run found on disk, the Markdown table, and the best
Vision Remember model copied out with its model card and held-out samples."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

from llava_vr import LlavaVRConfig, LlavaVRForConditionalGeneration
from llava_vr.hub import LlavaVRRefusal, card_data, render_card

from .visual_forgetting_runs import run_dir
from .visual_forgetting_task import PATCH, VARIANTS, held_out_samples

CARD_TEMPLATE = "llava_vr_visual_forgetting.md"


def collect(output_dir: Path, preset: dict) -> list[dict]:
    """Every finished run of `preset` under `output_dir`, ordered by variant then seed."""
    rows = [json.loads(p.read_text()) for p in sorted(output_dir.glob("*-seed*/result.json"))]
    as_saved = json.loads(json.dumps(preset))  # tuples become lists in result.json
    rows = [r for r in rows if r.get("preset") == as_saved]
    order = list(VARIANTS)
    return sorted(rows, key=lambda r: (order.index(r["variant"]), r["seed"]))


def _mean_std(values: list[float]) -> str:
    """`mean ± sample std` (the std only with 2 or more values)."""
    mean = statistics.mean(values)
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"


def recovered_share(results, variant: str, key: str = "accuracy") -> float | None:
    """The share of what pooling loses against `mlp` that `variant` wins back, `(vr - pool) / (mlp - pool)` on the
    means of `key` (paper, Tab. 5a: 85 %); `None` without `mlp` and `pool` runs or when pooling loses nothing."""
    means = {}
    for name in ("mlp", "pool", variant):
        values = [r[key] for r in results if r["variant"] == name]
        if not values:
            return None
        means[name] = statistics.mean(values)
    loss = means["mlp"] - means["pool"]
    return (means[variant] - means["pool"]) / loss if loss > 0 else None


def summarize(results) -> str:
    """Markdown table: one row per variant, mean ± std over seeds with the per-seed values beside them, and for the
    Vision Remember variants the share of the pooling loss they recover (exact match and per digit)."""
    lines = [
        "| variant | image tokens | seeds | exact match (mean ± std) | per seed | per-digit accuracy (mean ± std) | "
        "per seed | pooling loss recovered (exact / digit) | train s (mean) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in dict.fromkeys(r["variant"] for r in results):
        rows = [r for r in results if r["variant"] == variant]
        exact, digits = [r["accuracy"] for r in rows], [r["digit_accuracy"] for r in rows]
        shares = [recovered_share(results, variant, key) for key in ("accuracy", "digit_accuracy")]
        recovered = "-"
        if variant.startswith("pool_vr") and None not in shares:
            recovered = " / ".join(f"{100 * x:.0f} %" for x in shares)
        lines.append(
            f"| {variant} | {rows[0]['image_tokens']} | {', '.join(str(r['seed']) for r in rows)} | "
            f"{_mean_std(exact)} | {', '.join(f'{a:.3f}' for a in exact)} | {_mean_std(digits)} | "
            f"{', '.join(f'{a:.3f}' for a in digits)} | {recovered} | "
            f"{statistics.mean(r['train_seconds'] for r in rows):.0f} |"
        )
    return "\n".join(lines) + "\n"


def write_summary(output_dir: Path, preset: dict, results: list[dict]) -> str:
    """Writes `results.json` (every run, without the preset per row) and `results.md`; returns the table."""
    table = summarize(results)
    slim = [{k: v for k, v in r.items() if k != "preset"} for r in results]
    (output_dir / "results.json").write_text(json.dumps(dict(preset=preset, results=slim), indent=2))
    (output_dir / "results.md").write_text(table)
    return table


def render_experiment_card(config, best: dict, results: list[dict], preset: dict, name: str):
    """The bundled model's card (hub template `llava_vr_visual_forgetting.md`) with its measured accuracy."""
    model = LlavaVRForConditionalGeneration(config)
    return render_card(
        config,
        CARD_TEMPLATE,
        card_data(license="apache-2.0", extra_tags=["synthetic-digit-grids"]),
        model_name=name,
        repo_id=name,
        best=best,
        results=results,
        grid=preset["grid"],
        image=preset["image"],
        patch=PATCH,
        question="Read the grid.",
        steps=preset["steps"],
        example_answer=held_out_samples(preset, best["seed"], 1)[0].answer,
        batch=preset["batch"],
        seeds=sorted({r["seed"] for r in results}),
        variants=list(dict.fromkeys(r["variant"] for r in results)),
        vocab_size=config.text_config.vocab_size,
        parameters_total=f"{sum(p.numel() for p in model.parameters()):,}",
    )


def save_samples(folder: Path, preset: dict, seed: int, count: int) -> None:
    """The first `count` held-out test images of `seed` as PNGs, with `questions.json` (question and answer each), in
    `folder` (replaced: `refuse_to_overwrite` has checked that it is empty or that `--overwrite` was given)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    entries = []
    for index, sample in enumerate(held_out_samples(preset, seed, count)):
        name = f"digit_grid_test_seed{seed}_{index}.png"
        sample.image.save(folder / name)
        entries.append(dict(image=name, question=sample.question, answer=sample.answer))
    (folder / "questions.json").write_text(
        json.dumps(
            dict(
                source=f"visual-forgetting experiment, test split of seed {seed} (first {count} images)",
                samples=entries,
            ),
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {count} held-out samples to {folder}")


def save_best(results: list[dict], args, preset: dict) -> None:
    """Copies the most accurate run of `--best-of` (a pool_vr_* variant) to `--save-best-to` and writes its model card
    and results."""
    candidates = [
        r
        for r in results
        if r["variant"] == args.best_of and (run_dir(args.output_dir, r["variant"], r["seed"]) / "model").is_dir()
    ]
    if not candidates:
        raise LlavaVRRefusal(f"no trained {args.best_of} model in {args.output_dir} to save (--best-of)")
    best = max(candidates, key=lambda r: (r["accuracy"], r["digit_accuracy"]))
    target = args.save_best_to
    if target.exists():  # empty, or `--overwrite` (`refuse_to_overwrite` checked before anything trained)
        shutil.rmtree(target)
    shutil.copytree(run_dir(args.output_dir, best["variant"], best["seed"]) / "model", target)
    slim = [{k: v for k, v in r.items() if k not in ("losses", "preset")} for r in results]
    (target / "experiment.json").write_text(
        json.dumps(dict(preset=preset, best=slim[results.index(best)], results=slim), indent=2)
    )
    card = render_experiment_card(LlavaVRConfig.from_pretrained(target), best, results, preset, target.name)
    card.save(target / "README.md")
    print(
        f"saved the best Vision Remember model ({best['variant']}, seed {best['seed']}, exact match "
        f"{best['accuracy']:.3f}) to {target}"
    )
    if args.save_samples_to:
        save_samples(args.save_samples_to, preset, best["seed"], args.num_samples)


__all__ = [
    "collect",
    "recovered_share",
    "render_experiment_card",
    "save_best",
    "save_samples",
    "summarize",
    "write_summary",
]
