# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Results of the whole-model benchmark: tables, the efficiency targets and comparisons (`model_targets`), plot."""

from pathlib import Path

from llava_vr.registries_llava_vr import VR_INTERACTIONS

from .model_targets import TARGETS, comparison_table, counterpart_pairs, targets_summary
from .model_variants import POOL, VR_MAIN, parse_variant
from .reporting import fmt, markdown_table, pyplot, save_figure

# plot: line style per VR interaction (registry order; later ones solid), one colour per variant
VR_STYLES = dict(zip(["none", *VR_INTERACTIONS], ["--", "-", "-.", ":", (0, (3, 1, 1, 1))]))


def results_table(rows: list[dict]) -> str:
    headers = ["variant", "crops (tiles)", "img tok", "TTFT ms", "x pool", "mlp/TTFT", "x own proj", "vision ms",
               "VR ms", "decode tok/s", "peak MiB", "GFLOP", "GFLOP x pool", "aten ops"]
    body = []
    flops_pool = {r["crops"]: r.get("flops", {}).get("total") for r in rows if r["variant"] == POOL}
    for r in rows:
        gflops = r.get("flops", {}).get("total")
        body.append([
            r["variant"], f"{r['crops']} ({r['tower_tiles']})", r["image_tokens"], fmt(r.get("ttft_ms"), ".1f"),
            fmt(r.get("x_pool"), ".3f"), fmt(r.get("mlp_speedup"), ".2f", "x"), fmt(r.get("x_proj"), ".3f"),
            fmt(r.get("breakdown_ms", {}).get("vision"), ".1f"), fmt(r.get("vr_ms") if r["vr"] != "none" else None,
                                                                       ".1f"),
            fmt(r.get("decode_tok_s"), ".1f"), fmt(r["peak_extra_mib"], ".0f"),
            fmt(gflops / 1e9 if gflops else None, ".1f"),
            fmt(gflops / flops_pool[r["crops"]] if gflops and flops_pool.get(r["crops"]) else None, ".3f"),
            r.get("aten_ops"),
        ])
    return markdown_table(headers, body)


def estimate_table(rows: list[dict]) -> str:
    headers = ["variant", "crops", "est. TTFT ms", "x pool", "mlp/TTFT", "GFLOP (exact)", "GFLOP x pool",
               "mlp GFLOP / GFLOP", "VR GFLOP", "VR % of FLOPs", "VR % of time", "time / FLOP share"]
    body = []
    for r in rows:
        e = r.get("full_depth_estimate")
        if not e:
            continue
        body.append([r["variant"], r["crops"], fmt(e.get("ttft_ms"), ".1f"), fmt(e.get("x_pool"), ".3f"),
                     fmt(e.get("mlp_speedup"), ".2f", "x"), fmt(e.get("gflops"), ".1f"),
                     fmt(e.get("gflops_x_pool"), ".3f"), fmt(e.get("gflops_mlp_speedup"), ".2f", "x"),
                     fmt(e.get("gflops_vr") if r["vr"] != "none" else None, ".1f"),
                     fmt(e.get("vr_flops_pct"), ".2f"), fmt(e.get("vr_time_pct"), ".2f"),
                     fmt(e.get("vr_time_over_flop_share"), ".2f")])
    return markdown_table(headers, body)


def _colour(variant: str, families: list[str]):
    """tab20 colour pairs: one pair per variant family (the variant with its formulation left to `auto`), the dark
    shade for `auto` / `absorbed`, the light one for `:plain`."""
    spec = parse_variant(variant)
    family = spec.with_(formulation="auto").name
    if family not in families:
        families.append(family)
    colours = pyplot().get_cmap("tab20").colors
    return colours[(2 * families.index(family) + (spec.formulation == "plain")) % len(colours)]


def plot(rows: list[dict], path: Path, title: str):
    """Left: TTFT over the crop count per variant (measured); right: TTFT relative to pooling alone, in the
    full-depth estimate when there is one (where the targets apply: a dotted line at each VR-over-pooling target),
    else measured."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(14, 5.5))
    estimate = any(r.get("full_depth_estimate", {}).get("x_pool") for r in rows)
    families = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        line = VR_STYLES.get(parse_variant(variant).vr, "-")
        kwargs = dict(linestyle=line, marker="o", color=_colour(variant, families), label=variant)
        own = [r for r in rows if r["variant"] == variant and "ttft_ms" in r]
        if own:
            left.plot(*zip(*sorted((r["crops"], r["ttft_ms"]) for r in own)), **kwargs)
        rel = sorted((r["crops"], (r.get("full_depth_estimate") if estimate else r).get("x_pool")) for r in own)
        rel = [(x, y) for x, y in rel if y is not None]
        if rel:
            right.plot(*zip(*rel), **kwargs)
    left.set(xlabel="AnyRes crops (tower tiles = crops + 1)", ylabel="TTFT (ms, median, as measured)", title=title)
    left.set_yscale("log")
    right.set(xlabel="AnyRes crops", ylabel="TTFT / TTFT(adaptive_avg_pool, no VR)",
              title="relative to pooling alone" + (" (full-depth estimate)" if estimate else " (measured)"))
    for limit in TARGETS["max_vr_over_pool_pct"].values():
        right.axhline(1 + limit / 100, color="grey", linewidth=0.8, linestyle=":")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
        axis.set_xticks(sorted({r["crops"] for r in rows}))
    right.legend(fontsize=7, loc="best")
    save_figure(fig, path)


def _print_comparisons(rows: list[dict], estimate: bool):
    where = "full-depth estimate" if estimate else "measured"
    titles = {"formulation": f"Formulation: each VR variant against its `:plain` twin (ratios = variant / twin; "
                             f"VR over pooling and VR % of FLOPs: {where})",
              "width": f"Width: each `:w<N>` variant against the same at the default width (ratios = variant / "
                       f"default; VR over pooling and VR % of FLOPs: {where})"}
    for kind, title in titles.items():
        if counterpart_pairs(rows, kind):
            print(f"\n{title}:\n")
            print(comparison_table(rows, kind, estimate))


def print_report(rows: list[dict], reference_depth: dict | None, targets: bool):
    """The results table, the full-depth estimate (when there is one), the formulation and width comparisons and,
    with `targets` (presets at real widths), how the targeted variants compare with `TARGETS` (on the full-depth
    estimate when there is one: a cut-depth model's VR share is not the model's)."""
    print()
    print(results_table(rows))
    estimate = any(r.get("full_depth_estimate") for r in rows)
    if estimate:
        print(f"\nFull-depth estimate ({reference_depth['vision']} tower + {reference_depth['text']} decoder layers; "
              "tower and decoder-layer times scaled, FLOPs exact, VR/projector/rest as measured):\n")
        print(estimate_table(rows))
    _print_comparisons(rows, estimate)
    if not targets:
        return
    lines = targets_summary(rows, estimate)
    if lines:
        print(f"\nTargets ({'full-depth estimate' if estimate else 'measured'}; {VR_MAIN} = the default model):")
        for line in lines:
            print("  - " + line)


__all__ = ["estimate_table", "plot", "print_report", "results_table"]
