# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Results of the Vision Remember micro-benchmark: structural checks, tables, plot."""

from pathlib import Path

from .reporting import fmt, markdown_table, pyplot, save_figure

PROFILE_CLASSES = ["matmul", "attention (SDPA)", "gather/scatter", "norm", "copy/cast", "other element-wise"]


def _groups(rows: list[dict]) -> dict[tuple[int, str], list[dict]]:
    """Rows by (LLM width, interaction), in first-seen order."""
    groups = {}
    for row in rows:
        groups.setdefault((row["text_hidden"], row["interaction"]), []).append(row)
    return groups


def _cross_attention_line(width: int, interaction: str, r: dict) -> tuple[str, bool]:
    calls = r["cross_attention_calls"]
    shapes = ", ".join(f"{c['op']} q{list(c.get('q', []))} k{list(c.get('k', []))}" for c in calls)
    line = (f"D={width} {interaction} cross-attention ({r['tiles']} tiles): "
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
    for (width, interaction), group in _groups(rows).items():
        counts = sorted({r["dispatched_ops"] for r in group})
        constant = len(counts) == 1
        ok &= constant
        lines.append(f"D={width} {interaction}: dispatched ops per VR forward {counts} over tiles "
                     f"{[r['tiles'] for r in group]} -> "
                     f"{'constant (no per-tile/window loop)' if constant else 'GROWS'}")
        line, passed = _cross_attention_line(width, interaction, group[-1])
        ok &= passed
        lines.append(line)
    return {"all_ok": ok, "lines": lines}


def results_table(rows: list[dict]) -> str:
    headers = ["D", "interaction", "tiles", "tokens", "VR ms", "build ms", "GFLOP", "GFLOP/s", "% of matmul",
               "limit ms", "peak MiB", "ops"]
    body = [[r["text_hidden"], r["interaction"], r["tiles"], r["tokens"], fmt(r["forward_ms"], ".2f"),
             fmt(r["build_ms"], ".2f"), fmt(r["gflop"], ".2f"), fmt(r["achieved_gflops"], ".0f"),
             fmt(r["pct_of_matmul"], ".0f", "%"), fmt(r["limit_ms"], ".2f"), fmt(r["peak_extra_mib"], ".0f"),
             r["dispatched_ops"]] for r in rows]
    return markdown_table(headers, body)


def profile_table(rows: list[dict]) -> str:
    headers = ["D", "interaction", "tiles"] + [f"{c} %" for c in PROFILE_CLASSES] + ["top op"]
    body = []
    for r in rows:
        if "profile" not in r:
            continue
        pct = r["profile"]["by_class_pct"]
        top = r["profile"]["top_ops"][0]
        body.append([r["text_hidden"], r["interaction"], r["tiles"],
                     *[fmt(pct.get(c, 0.0), ".0f") for c in PROFILE_CLASSES], f"{top['op']} ({top['pct']:.0f}%)"])
    return "Time by operator class (profiler self time, largest case):\n\n" + markdown_table(headers, body)


def plot(rows: list[dict], path: Path, meta: dict):
    """Left: one VR forward's time over the vision tokens; right: its GFLOP/s as % of the plain matmul's."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(12, 4.5))
    for (width, interaction), group in _groups(rows).items():
        group = sorted(group, key=lambda r: r["tokens"])
        xs = [r["tokens"] for r in group]
        label = f"{interaction} D={width}"
        left.plot(xs, [r["forward_ms"] for r in group], marker="o", label=label)
        right.plot(xs, [r["pct_of_matmul"] for r in group], marker="o", label=label)
    limit = meta["matmul_limit_gflops"]
    left.set(xlabel="vision tokens (144 per tile)", ylabel="one VR forward (ms, median)", xscale="log", yscale="log",
             title=f"Vision Remember, {meta['dtype']}, {meta['machine'].get('gpu', meta['machine']['cpu'])}")
    right.set(xlabel="vision tokens", ylabel="achieved GFLOP/s as % of plain matmul", xscale="log",
              title=f"arithmetic efficiency (matmul = {limit:.0f} GFLOP/s)")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
    right.legend(fontsize=7)
    save_figure(fig, path)


def print_report(rows: list[dict], checks: dict):
    print()
    print(results_table(rows))
    print()
    print(profile_table(rows))
    print("\nChecks:")
    for line in checks["lines"]:
        print("  - " + line)


__all__ = ["plot", "print_report", "profile_table", "results_table", "structural_checks"]
