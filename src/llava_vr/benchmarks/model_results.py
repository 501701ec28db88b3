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
    """Medians over a case's timed runs: TTFT, decode speed, and the TTFT's breakdown into parts (ms)."""
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
    return result


def full_depth_estimate(row: dict, config: LlavaVRConfig, reference_depth: dict | None) -> dict | None:
    """TTFT / FLOPs with the tower and the decoder layers scaled to the reference depth (VR, projector, rest as
    measured). An estimate for presets with cut depths, labelled as such in the output."""
    if not reference_depth:
        return None
    vision_scale = reference_depth["vision"] / config.vision_config.num_hidden_layers
    text_scale = reference_depth["text"] / config.text_config.num_hidden_layers
    parts = row["breakdown_ms"]
    ttft = row["ttft_ms"] + parts["tower"] * (vision_scale - 1) + parts["lm_without_vr"] * (text_scale - 1)
    out = {"ttft_ms": ttft, "vision_scale": vision_scale, "text_scale": text_scale}
    if "flops" in row:
        flops = row["flops"]
        extra = flops["tower_layers"] * (vision_scale - 1) + flops["lm_layers"] * (text_scale - 1)
        out["gflops"] = (flops["total"] + extra) / 1e9  # exact: the layers of one stack are identical
        out["gflops_vr"] = flops["vr"] / 1e9
        out["vr_flops_pct"] = 100 * flops["vr"] / (flops["total"] + extra)
    return out


def add_ratios(rows: list[dict], key: str, nested: str | None = None):
    """Sets `x_pool` = value / value(`adaptive_avg_pool`), `mlp_speedup` = value(`mlp`) / value and `x_proj` =
    value / value(same projector without VR) at the same crop count, for `row[key]` (or `row[nested][key]`, written
    into `row[nested]`)."""

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
        target["x_pool"] = own / pool if pool else None
        target["mlp_speedup"] = mlp / own if mlp else None
        target["x_proj"] = own / projector if projector and row["vr"] != "none" else None


def add_flat_columns(row: dict):
    """CSV-friendly flat copies of the nested fields: `<part>_ms`, `gflops_<component>`, `full_depth_<key>`."""
    for key, value in row["breakdown_ms"].items():
        row[f"{key}_ms"] = value
    for key, value in row.get("flops", {}).items():
        row[f"gflops_{key}"] = value / 1e9
    for key, value in (row.get("full_depth_estimate") or {}).items():
        row[f"full_depth_{key}"] = value


__all__ = ["FLOP_COMPONENTS", "add_flat_columns", "add_ratios", "component_flops", "full_depth_estimate",
           "summarise"]
