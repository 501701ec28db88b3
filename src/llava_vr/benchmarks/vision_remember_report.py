# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Results of the Vision Remember micro-benchmark: structural checks, tables, plot."""

from pathlib import Path

from .reporting import fmt, markdown_table, pyplot, save_figure

PROFILE_CLASSES = ["matmul", "attention (SDPA)", "gather/scatter", "norm", "copy/cast", "other element-wise"]


def _groups(rows: list[dict]) -> dict[tuple[int, int, str, str], list[dict]]:
    """Rows by (LLM width, VR width, interaction, formulation), in first-seen order."""
    groups = {}
    for row in rows:
        groups.setdefault((row["text_hidden"], row["width"], row["interaction"], row["formulation"]), []).append(row)
    return groups


def _label(key: tuple) -> str:
    text_hidden, width, interaction, formulation = key
    return f"D={text_hidden} d={width} {interaction} {formulation}"


def _cross_attention_line(key: tuple, r: dict) -> tuple[str, bool]:
    interaction = key[2]
    calls = r["cross_attention_calls"]
    shapes = ", ".join(f"{c['op']} q{list(c.get('q', []))} k{list(c.get('k', []))}" for c in calls)
    line = (f"{_label(key)} cross-attention ({r['tiles']} tiles): "
            f"{len(calls)} attention call(s) [{shapes}], "
            f"kernels {r['cross_attention_kernels']}, gather ops {r['cross_attention_gather_ops']}, "
            f"score elements per tile {r['cross_attention_score_elements_per_tile']:,.0f} "
            f"(all heads; one cells x cells map per tile would be "
            f"{r['cross_attention_heads'] * (r['feature_cells'] // r['tiles']) ** 2:,})")
    if interaction != "sela":
        return line, True
    kernels = r["cross_attention_kernels"]
    # all windows of all tiles in one attention: one fused SDPA (plain formulation) or one masked softmax between
    # batched matmuls (absorbed formulation, which the module picks when it needs fewer FLOPs)
    one_pass = len(calls) + kernels.get("_softmax", 0) == 1 and sum(r["cross_attention_gather_ops"].values()) <= 2
    no_square = not r["cross_attention_cells_x_cells_tensors"]
    line += (f"; one attention pass ({'fused SDPA' if calls else 'absorbed: one softmax'}): "
             f"{'yes' if one_pass else 'NO'}; cells x cells tensors: "
             f"{r['cross_attention_cells_x_cells_tensors'] or 'none'}; largest cross-attention tensor "
             f"{r['cross_attention_largest'][0]['shape']}")
    return line, one_pass and no_square


def structural_checks(rows: list[dict]) -> dict:
    """Per (width, interaction): the op count does not grow with the tiles; the cross-attention of the largest case
    (SELA: one attention pass over all windows, no cells x cells tensor). `{"all_ok", "lines"}`."""
    lines, ok = [], True
    for key, group in _groups(rows).items():
        counts = sorted({r["dispatched_ops"] for r in group})
        constant = len(counts) == 1
        ok &= constant
        lines.append(f"{_label(key)}: dispatched ops per VR forward {counts} over tiles "
                     f"{[r['tiles'] for r in group]} -> "
                     f"{'constant (no per-tile/window loop)' if constant else 'GROWS'}")
        line, passed = _cross_attention_line(key, group[-1])
        ok &= passed
        lines.append(line)
    return {"all_ok": ok, "lines": lines}


def results_table(rows: list[dict]) -> str:
    headers = ["D", "d", "interaction", "formulation", "tiles", "tokens", "VR ms", "feature K/V ms", "cross-attn ms",
               "self-attn ms", "build ms", "GFLOP", "GFLOP/s", "% of matmul", "limit ms", "peak MiB", "ops"]
    body = []
    for r in rows:
        parts = r["time_ms_by_part"]
        body.append([r["text_hidden"], r["width"], r["interaction"], r["formulation"], r["tiles"], r["tokens"],
                     fmt(r["forward_ms"], ".2f"), fmt(parts["feature_kv"], ".2f"),
                     fmt(parts["feature_kv"] + parts["cross_attention_rest"], ".2f"),
                     fmt(parts["self_attention"], ".2f"), fmt(r["build_ms"], ".2f"), fmt(r["gflop"], ".2f"),
                     fmt(r["achieved_gflops"], ".0f"), fmt(r["pct_of_matmul"], ".0f", "%"), fmt(r["limit_ms"], ".2f"),
                     fmt(r["peak_extra_mib"], ".0f"), r["dispatched_ops"]])
    return markdown_table(headers, body)


def formulation_table(rows: list[dict], skipped: list[dict] = ()) -> str:
    """Absorbed against plain per (LLM width, VR width, interaction, tiles): VR forward and cross-attention times,
    their ratios, the cross-attention's FLOPs in each formulation (the module's count; `auto` runs the smaller),
    the relative output difference. Skipped cases show `skipped`."""
    cases = {(r["text_hidden"], r["width"], r["interaction"], r["tiles"], r["formulation"]): r for r in rows}
    cases |= {(r["text_hidden"], r["width"], r["interaction"], r["tiles"], r["formulation"]): r for r in skipped}
    headers = ["D", "d", "interaction", "tiles", "absorbed ms", "plain ms", "absorbed / plain", "cross-attn ratio",
               "absorbed GFLOP", "plain GFLOP", "auto picks", "output rel. diff"]
    body = []
    for key in dict.fromkeys(k[:4] for k in cases):
        absorbed, plain = cases.get((*key, "absorbed")), cases.get((*key, "plain"))
        if not (absorbed and plain):
            continue
        flops = absorbed["formulation_gflop"]
        times = [r.get("forward_ms") for r in (absorbed, plain)]
        cross = [r["time_ms_by_part"]["feature_kv"] + r["time_ms_by_part"]["cross_attention_rest"]
                 if "time_ms_by_part" in r else None for r in (absorbed, plain)]
        body.append([*key, fmt(times[0], ".2f") if times[0] else "skipped", fmt(times[1], ".2f"),
                     fmt(times[0] / times[1] if all(times) else None, ".2f"),
                     fmt(cross[0] / cross[1] if all(cross) else None, ".2f"), fmt(flops["absorbed"], ".3g"),
                     fmt(flops["plain"], ".3g"), absorbed["auto_picks"], fmt(absorbed.get("plain_rel_diff"), ".1e")])
    return markdown_table(headers, body)


def profile_table(rows: list[dict]) -> str:
    headers = ["D", "d", "interaction", "formulation", "tiles"] + [f"{c} %" for c in PROFILE_CLASSES] + ["top op"]
    body = []
    for r in rows:
        if "profile" not in r:
            continue
        pct = r["profile"]["by_class_pct"]
        top = r["profile"]["top_ops"][0]
        body.append([r["text_hidden"], r["width"], r["interaction"], r["formulation"], r["tiles"],
                     *[fmt(pct.get(c, 0.0), ".0f") for c in PROFILE_CLASSES], f"{top['op']} ({top['pct']:.0f}%)"])
    return "Time by operator class (profiler self time, largest case):\n\n" + markdown_table(headers, body)


def plot(rows: list[dict], path: Path, meta: dict):
    """Left: one VR forward's time over the vision tokens; middle: absorbed / plain time (log scale); right: GFLOP/s
    as % of the plain matmul's. One tab20 colour pair per (LLM width, VR width, interaction): dark = absorbed (solid),
    light = plain (dashed)."""
    fig, (left, middle, right) = pyplot().subplots(1, 3, figsize=(18, 5.5))
    groups = _groups(rows)
    colours = pyplot().get_cmap("tab20").colors
    families = list(dict.fromkeys(key[:3] for key in groups))
    for key, group in groups.items():
        group = sorted(group, key=lambda r: r["tokens"])
        xs = [r["tokens"] for r in group]
        plain = key[3] == "plain"
        style = dict(marker="o", linestyle="--" if plain else "-",
                     color=colours[(2 * families.index(key[:3]) + plain) % len(colours)])
        left.plot(xs, [r["forward_ms"] for r in group], label=_label(key), **style)
        right.plot(xs, [r["pct_of_matmul"] for r in group], **style)
        twin = {r["tokens"]: r["forward_ms"] for r in groups.get((*key[:3], "plain"), [])}
        ratio = [(r["tokens"], r["forward_ms"] / twin[r["tokens"]]) for r in group if not plain and r["tokens"] in twin]
        if ratio:
            middle.plot(*zip(*ratio), label=f"D={key[0]} d={key[1]} {key[2]}", **style)
    limit = meta["matmul_limit_gflops"]
    left.set(xlabel="vision tokens (144 per tile)", ylabel="one VR forward (ms, median)", xscale="log", yscale="log",
             title=f"Vision Remember, {meta['dtype']}, {meta['machine'].get('gpu', meta['machine']['cpu'])}")
    middle.set(xlabel="vision tokens", ylabel="VR forward: absorbed / plain", xscale="log", yscale="log",
               title="formulations (same weights and inputs)")
    middle.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    right.set(xlabel="vision tokens", ylabel="achieved GFLOP/s as % of plain matmul", xscale="log",
              title=f"arithmetic efficiency (matmul = {limit:.0f} GFLOP/s)")
    for axis in (left, middle, right):
        axis.grid(True, alpha=0.3)
    left.legend(fontsize=6)
    middle.legend(fontsize=6)
    save_figure(fig, path)


def print_report(rows: list[dict], checks: dict, skipped: list[dict] = ()):
    print()
    print(results_table(rows))
    print("\nAbsorbed against plain (same weights and inputs; VR forward and cross-attention time ratios):\n")
    print(formulation_table(rows, skipped))
    print()
    print(profile_table(rows))
    print("\nChecks:")
    for line in checks["lines"]:
        print("  - " + line)


__all__ = ["formulation_table", "plot", "print_report", "profile_table", "results_table", "structural_checks"]
