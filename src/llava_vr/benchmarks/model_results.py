# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The whole-model benchmark's numbers per case: FLOPs per component, medians of the timed rounds, the full-depth
estimate of a cut-depth preset, and the ratios between variants."""

import re

from llava_vr import LlavaVRConfig

from .model_variants import MLP, POOL
from .timing import median

FLOP_COMPONENTS = {  # component -> regex on FlopCounterMode's module names (each module counted once)
    "tower": r"\.model\.vision_tower$",
    "tower_layers": r"\.model\.vision_tower\..*encoder\.layers\.\d+$",
    "projector": r"\.model\.multi_modal_projector$",
    "vr": r"\.model\.language_model\.vision_remember\.\d+$",
    "lm_layers": r"\.model\.language_model\.layers\.\d+$",
    "lm_head": r"\.lm_head$",
}


def component_flops(per_module: dict[str, int]) -> dict[str, int]:
    """FLOPs per `FLOP_COMPONENTS` entry, `total` and `other` (total minus the components; `tower_layers` is part of
    `tower`)."""
    out = {name: 0 for name in FLOP_COMPONENTS}
    for module, flops in per_module.items():
        for name, pattern in FLOP_COMPONENTS.items():
            if re.search(pattern, module):
                out[name] += flops
    out["total"] = per_module.get("Global", 0)
    out["other"] = out["total"] - sum(out[name] for name in FLOP_COMPONENTS if name != "tower_layers")
    return out


def summarise(runs: list[dict], decode_tokens: int) -> dict:
    """Medians over a case's timed runs: TTFT, decode speed, and the TTFT's breakdown into parts (ms). `{}` without
    timed runs (`--repeats 0`)."""
    if not runs:
        return {}
    ttft = [r["ttft_s"] for r in runs]
    result = {
        "ttft_ms": median(ttft) * 1e3,
        "ttft_ms_min": min(ttft) * 1e3,
        "ttft_ms_runs": [t * 1e3 for t in ttft],
    }
    decode_s = [r["decode_s"] for r in runs if r["decode_s"] is not None]
    if decode_s:
        result["decode_tok_s"] = decode_tokens / median(decode_s)
        result["decode_ms_per_token"] = median(decode_s) / decode_tokens * 1e3
    keys = set().union(*(r["spans"] for r in runs))
    parts = {key: median([r["spans"].get(key, 0.0) for r in runs]) for key in keys}
    result["breakdown_ms"] = {
        "vision": parts.get("vision", 0.0),
        "tower": parts.get("tower", 0.0),
        "projector": parts.get("projector", 0.0),
        "vr_build": parts.get("vr_build", 0.0),
        "vr": parts.get("vr", 0.0),
        "lm_without_vr": parts.get("lm", 0.0) - parts.get("vr", 0.0),
        "rest": result["ttft_ms"] - parts.get("vision", 0.0) - parts.get("vr_build", 0.0) - parts.get("lm", 0.0),
    }
    result["vr_ms"] = parts.get("vr", 0.0) + parts.get("vr_build", 0.0)
    return result


def formulation_used(calls: dict) -> str | None:
    """The cross-attention formulation VR ran in a prefill, from `calls_per_prefill`: `absorbed`, `plain`, `mixed`
    (layers differed) or None (no VR)."""
    ran = [name for name in ("absorbed", "plain") if calls.get(name)]
    return {0: None, 1: ran[0] if ran else None, 2: "mixed"}[len(ran)]


def vr_shares(ttft_ms: float | None, vr_ms: float | None, vr_flops: float | None, total_flops: float | None) -> dict:
    """VR's share of the prefill FLOPs and of its time (the VR modules and their inputs' build), in %, and the ratio
    time share / FLOP share (1: VR runs as fast per FLOP as the rest of the prefill). Keys present when computable."""
    out = {}
    if vr_flops and total_flops:
        out["vr_flops_pct"] = 100 * vr_flops / total_flops
    if vr_ms and ttft_ms:
        out["vr_time_pct"] = 100 * vr_ms / ttft_ms
    if "vr_flops_pct" in out and "vr_time_pct" in out:
        out["vr_time_over_flop_share"] = out["vr_time_pct"] / out["vr_flops_pct"]
    return out


def shared_layer_times(rows: list[dict]) -> dict[tuple[int, int], dict[str, float]]:
    """Per `(crops, image tokens)`: the median over the variants of the tower time (every variant at that crop
    count runs the same tower) and of the decoder layers' time without VR (the same layers over the same sequence).
    The full-depth estimate scales these instead of each variant's own, so that the noise of one variant's tower or
    decoder does not enter its estimate four times over."""
    tower, lm = {}, {}
    for row in rows:
        if "breakdown_ms" in row:
            tower.setdefault(row["crops"], []).append(row["breakdown_ms"]["tower"])
            lm.setdefault((row["crops"], row["image_tokens"]), []).append(row["breakdown_ms"]["lm_without_vr"])
    return {key: {"tower": median(tower[key[0]]), "lm_without_vr": median(times)} for key, times in lm.items()}


def full_depth_estimate(row: dict, config: LlavaVRConfig, reference_depth: dict | None, shared: dict) -> dict | None:
    """TTFT / FLOPs with the tower and the decoder layers scaled to the reference depth: the row's TTFT with its own
    tower and decoder-layer times replaced by `shared_layer_times` (`shared`) scaled, VR, projector and the rest as
    measured. FLOPs are exact (the layers of one stack are identical). An estimate for presets with cut depths,
    labelled as such in the output; FLOPs only without timed rounds."""
    if not reference_depth:
        return None
    vision_scale = reference_depth["vision"] / config.vision_config.num_hidden_layers
    text_scale = reference_depth["text"] / config.text_config.num_hidden_layers
    out = {"vision_scale": vision_scale, "text_scale": text_scale, "ttft_ms": None}
    if "breakdown_ms" in row:
        own, layers = row["breakdown_ms"], shared[row["crops"], row["image_tokens"]]
        out["ttft_ms"] = (row["ttft_ms"] - own["tower"] - own["lm_without_vr"] + layers["tower"] * vision_scale
                          + layers["lm_without_vr"] * text_scale)
        out["vr_ms"] = row["vr_ms"]
    total = None
    if "flops" in row:
        flops = row["flops"]
        total = flops["total"] + flops["tower_layers"] * (vision_scale - 1) + flops["lm_layers"] * (text_scale - 1)
        out["gflops"] = total / 1e9
        out["gflops_vr"] = flops["vr"] / 1e9
    out.update(vr_shares(out["ttft_ms"], out.get("vr_ms"), row.get("flops", {}).get("vr"), total))
    return out


def add_ratios(rows: list[dict], key: str, nested: str | None = None, prefix: str = ""):
    """Sets `x_pool` = value / value(`adaptive_avg_pool`), `mlp_speedup` = value(`mlp`) / value and `x_proj` =
    value / value(same projector without VR) at the same crop count, for `row[key]` (or `row[nested][key]`, written
    into `row[nested]`), each name preceded by `prefix`."""

    def value(row):
        return row.get(key) if nested is None else (row.get(nested) or {}).get(key)

    by_case = {(r["variant"], r["crops"]): r for r in rows}
    for row in rows:
        own = value(row)
        if own is None:
            continue

        def reference(variant):
            other = by_case.get((variant, row["crops"]))
            return None if other is None else value(other)

        target = row if nested is None else row[nested]
        pool, mlp, projector = reference(POOL), reference(MLP), reference(row["projector"])
        target[prefix + "x_pool"] = own / pool if pool else None
        target[prefix + "mlp_speedup"] = mlp / own if mlp else None
        target[prefix + "x_proj"] = own / projector if projector and row["vr"] != "none" else None


def add_flat_columns(row: dict):
    """CSV-friendly flat copies of the nested fields: `<part>_ms`, `gflops_<component>`, `full_depth_<key>`."""
    for key, value in row.get("breakdown_ms", {}).items():
        row[f"{key}_ms"] = value
    for key, value in row.get("flops", {}).items():
        row[f"gflops_{key}"] = value / 1e9
    for key, value in (row.get("full_depth_estimate") or {}).items():
        row[f"full_depth_{key}"] = value


__all__ = ["FLOP_COMPONENTS", "add_flat_columns", "add_ratios", "component_flops", "formulation_used",
           "full_depth_estimate", "shared_layer_times", "summarise", "vr_shares"]
