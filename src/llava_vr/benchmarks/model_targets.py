# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The whole-model benchmark's efficiency targets and its side-by-side comparisons of VR variants (formulation:
absorbed / plain; width: `:w<N>` / the paper's width), computed from the result rows.

A row's numbers come from its full-depth estimate (`estimate=True`, presets with cut depths such as `cpu-small`) or
from the row itself (measured, presets at full depth).
"""

from .model_variants import MLP, VR_MAIN, VR_V1, parse_variant
from .reporting import fmt, markdown_table

# The efficiency targets, judged on presets at real widths (`targets` in the preset); at Qwen2-0.5B full depth the
# cpu-small preset's full-depth estimate stands for the model:
TARGETS = {
    # VR over pooling alone, % of TTFT: the default model (token self-attention, the paper's v2) and the paper's v1
    "max_vr_over_pool_pct": {VR_MAIN: 10.0, VR_V1: 8.0},
    # VR's share of the TTFT over its share of the prefill FLOPs (1: VR runs as fast per FLOP as the rest)
    "max_time_over_flop_share": 1.15,
    # TTFT(mlp) / TTFT(default model): the paper's 1.60x at Qwen2-1.5B
    "min_mlp_speedup": 1.6,
}
# the comparisons: each VR row against the variant with these settings changed (when that one ran too)
COUNTERPARTS = {"formulation": {"formulation": "plain"}, "width": {"width": None}}


def numbers(row: dict, estimate: bool) -> dict | None:
    """The numbers a row is judged on: its full-depth estimate, or the row as measured."""
    return row.get("full_depth_estimate") if estimate else row


def target_checks(rows: list[dict], estimate: bool = False) -> list[dict]:
    """`{"target", "variant", "crops", "value", "limit", "met"}` per target and crop count: VR over pooling (%) and
    time share / FLOP share for the variants of `TARGETS["max_vr_over_pool_pct"]`, the `mlp` speed-up for
    `VR_MAIN`. Rows without the numbers are skipped."""
    checks = []

    def check(target, row, value, limit, met):
        checks.append(dict(target=target, variant=row["variant"], crops=row["crops"], value=value, limit=limit,
                           met=bool(met)))

    for row in rows:
        source = numbers(row, estimate)
        limit = TARGETS["max_vr_over_pool_pct"].get(row["variant"])
        if not source or limit is None or source.get("x_pool") is None:
            continue
        over = (source["x_pool"] - 1) * 100
        check("vr_over_pool_pct", row, over, limit, over <= limit)
        share = source.get("vr_time_over_flop_share")
        if share is not None:
            most = TARGETS["max_time_over_flop_share"]
            check("time_over_flop_share", row, share, most, share <= most)
        speedup = source.get("mlp_speedup")
        if row["variant"] == VR_MAIN and speedup is not None:
            least = TARGETS["min_mlp_speedup"]
            check("mlp_speedup", row, speedup, least, speedup >= least)
    return checks


def _describe(check: dict) -> str:
    verdict = "met" if check["met"] else "missed"
    value, limit = check["value"], check["limit"]
    if check["target"] == "vr_over_pool_pct":
        return f"VR over pooling {value:+.1f}% (target <= +{limit:g}%: {verdict})"
    if check["target"] == "time_over_flop_share":
        return f"VR time share / FLOP share {value:.2f} (target <= {limit:g}: {verdict})"
    return f"vs {MLP} {value:.2f}x (target >= {limit:g}x: {verdict})"


def targets_summary(rows: list[dict], estimate: bool = False) -> list[str]:
    """One line per (variant, crop count) with its `target_checks`."""
    lines = {}
    for check in target_checks(rows, estimate):
        key = (check["variant"], check["crops"])
        lines.setdefault(key, []).append(_describe(check))
    return [f"{variant} crops={crops}: " + "; ".join(parts) for (variant, crops), parts in lines.items()]


def counterpart_pairs(rows: list[dict], kind: str) -> list[tuple[dict, dict]]:
    """`(row, counterpart)` for every VR row whose `COUNTERPARTS[kind]` variant ran at the same crop count."""
    by_case = {(r["variant"], r["crops"]): r for r in rows}
    pairs = []
    for row in rows:
        if row["vr"] == "none":
            continue
        other = parse_variant(row["variant"]).with_(**COUNTERPARTS[kind]).name
        if other != row["variant"] and (other, row["crops"]) in by_case:
            pairs.append((row, by_case[other, row["crops"]]))
    return pairs


def _ratio(a, b):
    return a / b if a is not None and b else None


def _over_pool(row: dict, estimate: bool):
    source = numbers(row, estimate) or {}
    return None if source.get("x_pool") is None else (source["x_pool"] - 1) * 100


def comparison_table(rows: list[dict], kind: str, estimate: bool) -> str:
    """Each VR row against its `kind` counterpart: TTFT and VR time ratios, VR FLOP ratio, VR over pooling of both
    (full-depth estimate when `estimate`), VR share of the FLOPs of both."""
    headers = ["variant", "vs", "crops", "formulation", "TTFT ratio", "VR time ratio", "VR GFLOP ratio",
               "VR over pool %", "vs: VR over pool %", "VR % FLOPs", "vs: VR % FLOPs"]
    body = []
    for row, other in counterpart_pairs(rows, kind):
        own, theirs = numbers(row, estimate) or {}, numbers(other, estimate) or {}
        body.append([
            row["variant"], other["variant"], row["crops"], row.get("vr_formulation_used"),
            fmt(_ratio(own.get("ttft_ms"), theirs.get("ttft_ms")), ".3f"),
            fmt(_ratio(row.get("vr_ms"), other.get("vr_ms")), ".2f"),
            fmt(_ratio(row.get("flops", {}).get("vr"), other.get("flops", {}).get("vr")), ".2f"),
            fmt(_over_pool(row, estimate), "+.1f"), fmt(_over_pool(other, estimate), "+.1f"),
            fmt(own.get("vr_flops_pct"), ".2f"), fmt(theirs.get("vr_flops_pct"), ".2f"),
        ])
    return markdown_table(headers, body)


__all__ = ["COUNTERPARTS", "TARGETS", "comparison_table", "counterpart_pairs", "numbers", "target_checks",
           "targets_summary"]
