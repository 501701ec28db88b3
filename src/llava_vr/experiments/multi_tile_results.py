# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The multi-tile experiment's summary, from `results.json` alone: the Markdown table (mean ± std, per seed, pooling
loss recovered), the question-first/after comparison, and the plot of accuracy against image tokens."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from .multi_tile_options import PRIORITY, VARIANTS
from .visual_forgetting_results import _mean_std


def runs_of(output_dir: Path, preset: dict) -> list[dict]:
    """The runs of `preset` in `results.json`, ordered by variant (the priority order) then seed."""
    path = output_dir / "results.json"
    rows = json.loads(path.read_text())["runs"] if path.is_file() else []
    as_saved = json.loads(json.dumps(preset))
    rows = [r for r in rows if r.get("preset") == as_saved]
    return sorted(rows, key=lambda r: (PRIORITY.index(r["variant"]), r["seed"]))


def mean_of(runs: list[dict], variant: str, key: str) -> float | None:
    values = [r[key] for r in runs if r["variant"] == variant]
    return statistics.mean(values) if values else None


def recovered_share(runs: list[dict], variant: str, key: str = "accuracy", pool: str = "pool") -> float | None:
    """`(variant - pool) / (mlp - pool)` on the means of `key`; `None` without the runs or when pooling loses
    nothing. `pool` is the pooling run at the same question position (`pool_qafter` for `*_qafter` variants)."""
    means = [mean_of(runs, name, key) for name in ("mlp", pool, variant)]
    if None in means or means[0] - means[1] <= 0:
        return None
    return (means[2] - means[1]) / (means[0] - means[1])


def layouts_of(row: dict) -> list[str]:
    """The AnyRes layouts of the run's images (its preset's; both where the preset does not say)."""
    return list(row.get("preset", {}).get("layouts", row["image_tokens"]))


def tokens_per_image(row: dict) -> float:
    """Mean image tokens over the run's layouts (drawn equally often)."""
    return statistics.mean(row["image_tokens"][layout] for layout in layouts_of(row))


def summarize(runs: list[dict]) -> str:
    """Markdown table, one row per variant, then the question-first/after comparison."""
    lines = [
        f"| variant | question | image tokens ({' / '.join(layouts_of(runs[0]))}) | seeds | exact match (mean ± std) | "
        "per seed | per-digit accuracy (mean ± std) | per seed | pooling loss recovered (exact / digit) | "
        "train s (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rows = [r for r in runs if r["variant"] == variant]
        exact, digits = [r["accuracy"] for r in rows], [r["digit_accuracy"] for r in rows]
        pool = "pool" if rows[0]["question_first"] else "pool_qafter"
        recovered = "-"
        if variant not in ("mlp", "pool", "pool_qafter"):
            shares = [recovered_share(runs, variant, key, pool) for key in ("accuracy", "digit_accuracy")]
            if None not in shares:
                recovered = " / ".join(f"{100 * x:.0f} %" for x in shares)
        tokens = " / ".join(str(rows[0]["image_tokens"][layout]) for layout in layouts_of(rows[0]))
        lines.append(
            f"| {variant} | {'first' if rows[0]['question_first'] else 'after'} | {tokens} | "
            f"{', '.join(str(r['seed']) for r in rows)} | {_mean_std(exact)} | {', '.join(f'{a:.3f}' for a in exact)} "
            f"| {_mean_std(digits)} | {', '.join(f'{a:.3f}' for a in digits)} | {recovered} | "
            f"{statistics.mean(r['train_seconds'] for r in rows):.0f} |"
        )
    not_run = [v for v in PRIORITY if not any(r["variant"] == v for r in runs)]
    if not_run:
        lines.append(f"\nNot run: {', '.join(not_run)}.")
    pairs = [("pool", "pool_qafter"), ("pool_vr_sela", "pool_vr_sela_qafter")]
    compared = [
        (first, after)
        for first, after in pairs
        if mean_of(runs, first, "accuracy") is not None and mean_of(runs, after, "accuracy") is not None
    ]
    if compared:
        lines += [
            "",
            "| variant | exact match, question first | question after | first − after (exact / digit) | seeds |",
            "|---|---|---|---|---|",
        ]
        for first, after in compared:
            a, b = (mean_of(runs, v, "accuracy") for v in (first, after))
            da, db = (mean_of(runs, v, "digit_accuracy") for v in (first, after))
            lines.append(
                f"| {first} | {a:.3f} | {b:.3f} | {a - b:+.3f} / {da - db:+.3f} | first: "
                f"{', '.join(str(r['seed']) for r in runs if r['variant'] == first)}; after: "
                f"{', '.join(str(r['seed']) for r in runs if r['variant'] == after)} |"
            )
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], path: Path) -> None:
    """Exact match and per-digit accuracy (each seed a dot, the mean a marker with the std as error bar) against
    image tokens per image, one colour per variant; the per-digit panel marks chance (0.1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, panels = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
    for key, axes, label in (
        ("accuracy", panels[0], "exact match"),
        ("digit_accuracy", panels[1], "per-digit accuracy"),
    ):
        for variant in dict.fromkeys(r["variant"] for r in runs):
            rows = [r for r in runs if r["variant"] == variant]
            x, values = tokens_per_image(rows[0]), [r[key] for r in rows]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            marker = "s" if variant.startswith("pool_vr") else "o"
            line = axes.errorbar(x, statistics.mean(values), yerr=std, marker=marker, capsize=3, label=variant, ls="")
            axes.scatter([x] * len(values), values, s=8, color=line[0].get_color(), alpha=0.5)
        axes.set_xscale("log")
        axes.set_xlabel(f"image tokens per image ({' / '.join(layouts_of(runs[0]))} layout)")
        axes.set_ylabel(f"{label}, held-out test images")
        axes.set_ylim(-0.02, 1.02)
    panels[1].axhline(0.1, color="grey", lw=0.8, ls=":", label="chance (per digit)")
    panels[1].legend(fontsize=7, loc="best")
    figure.suptitle("Multi-tile region questions: accuracy against image tokens")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_summary(output_dir: Path, preset: dict) -> str:
    """Writes `results.md` and `accuracy_vs_tokens.png` from `results.json`; returns the table."""
    runs = runs_of(output_dir, preset)
    table = summarize(runs) if runs else "no finished run\n"
    (output_dir / "results.md").write_text(table)
    if runs:
        plot(runs, output_dir / "accuracy_vs_tokens.png")
    return table


__all__ = ["VARIANTS", "plot", "recovered_share", "runs_of", "summarize", "write_summary"]
