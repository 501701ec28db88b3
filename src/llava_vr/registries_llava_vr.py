# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The axes of variation of LLaVA-VR, one registry each: name -> one-line description.

The config's `Literal` fields, the command-line choices, the tests' parametrisations, the benchmark variants and the
model-card text all read these dictionaries. Adding a projector (interaction, saliency mode, ...) means adding its
class in its own file and one line here; the implementation files check at import that they implement exactly the
names registered here (`check_implemented`):

| registry | config field | implemented in |
|---|---|---|
| `PROJECTORS` | `projector_type` | `projectors_llava_vr.py` (`PROJECTOR_CLASSES`) |
| `VR_INTERACTIONS` | `vision_remember_interaction` | `vision_remember_llava_vr.py` (`CROSS_ATTENTION_CLASSES`) |
| `SALIENCY_MODES` | `vision_remember_saliency` | `saliency_llava_vr.py` |
| `FORMULATIONS` | `vision_remember_formulation` | `token_feature_attention_llava_vr.py` |
| `WINDOW_LAYOUTS` | `vision_remember_window_layout` | `feature_windows_llava_vr.py` |

Torch-free, so the config (and `--help`) can import it cheaply.
"""

from typing import Literal

PROJECTORS = {
    "mlp": "LLaVA-NeXT's two-layer GELU MLP, no compression",
    "adaptive_avg_pool": "2D adaptive average pooling of each tile's patch grid, then the two-layer MLP",
    "pixel_shuffle": "2×2 space-to-depth (InternVL), LayerNorm, then the two-layer MLP",
    "ldpv2": "MobileVLM-v2 LDPv2: MLP, 2×2 average pooling, depthwise-conv positional residual (PEG)",
    "tokenpacker": "TokenPacker: pooled queries re-read their region of the full-resolution features, then the MLP",
    "saliency_top_k": "VisionZip-style selection: each tile's g×g most salient patches (feature L2 norm), in raster "
    "order, then the two-layer MLP",
}
"""Projectors (`projector_type`); every one but `mlp` compresses a tile to `projector_pooled_grid_size**2` tokens."""

VR_INTERACTIONS = {
    "sela": "saliency-enhanced local attention: each token reads its window of the multi-level features (paper §4.2)",
    "deformable": "multi-level deformable attention around the token's cell (MoME style; paper Tab. 4b)",
    "global": "plain cross-attention from every token of an image to every feature cell of that image, all tiles "
    "(paper Tab. 4b)",
    "global_tile": "ablation: cross-attention from every token to every feature cell of its own tile only (dense "
    "like `global`, local like `sela` at tile scale: separates locality from density; cost linear in the tiles where "
    "`global`'s is quadratic)",
}
"""Token-feature cross-attention of Vision Remember (`vision_remember_interaction`)."""

SALIENCY_MODES = {
    "auto": "resolved at construction: for `sela`, `cls` when the tower has a CLS token (CLIP), else `mean_token`; "
    "`off` for the other interactions (the paper's saliency is part of SELA only)",
    "cls": "sigmoid(q_cls . k_p / sqrt(d)) per head, averaged over heads (paper Eq. 3)",
    "mean_token": "the same with the mean query of all tokens (towers without CLS, e.g. SigLIP)",
    "off": "no saliency weighting (all ones)",
}
"""Saliency weighting of the cross-attention's values (`vision_remember_saliency`)."""

FORMULATIONS = {
    "auto": "whichever of `absorbed` and `plain` has the lower estimated time, chosen for each call: FLOPs plus the "
    "bytes each moves, weighed per device and dtype (`formulation_costs`); plain where the absorbed one would not be "
    "exact (wrapped, quantised, offloaded or hooked modules)",
    "absorbed": "the key and value projections moved onto the queries and the attended features (LayerNorm affine "
    "folded), its (tokens x heads x feature width) intermediates in cache-sized blocks; fewer FLOPs when a token "
    "reads many feature cells",
    "plain": "keys and values projected for every feature cell, then attention",
}
"""How the token-feature cross-attention is computed (`vision_remember_formulation`); all give equal results."""

WINDOW_LAYOUTS = {
    "partition": "the paper (§4.2, Swin-style): aligned, non-overlapping `s x s` windows, each shared by the tokens "
    "over it; needs the feature grid divisible by the token grid and `s` a multiple of a token's region",
    "centred": "ablation, and the layout for windows `partition` refuses (odd sizes, adaptive SigLIP-384 regions): "
    "every token its own `s x s` window centred on its region, overlapping its neighbours', clipped at the tile border",
}
"""How `sela` windows wider than a token's region are laid out (`vision_remember_window_layout`)."""

ProjectorType = Literal[tuple(PROJECTORS)]
VisionRememberInteraction = Literal[tuple(VR_INTERACTIONS)]
SaliencyMode = Literal[tuple(SALIENCY_MODES)]
Formulation = Literal[tuple(FORMULATIONS)]
WindowLayout = Literal[tuple(WINDOW_LAYOUTS)]


def check_implemented(registry: dict, implemented, axis: str) -> None:
    """Raises `ValueError` when an implementation file and its registry name different variants."""
    if set(registry) != set(implemented):
        raise ValueError(f"{axis}: registered {sorted(registry)} but implemented {sorted(implemented)}")


__all__ = [
    "FORMULATIONS",
    "Formulation",
    "PROJECTORS",
    "ProjectorType",
    "SALIENCY_MODES",
    "SaliencyMode",
    "VR_INTERACTIONS",
    "VisionRememberInteraction",
    "WINDOW_LAYOUTS",
    "WindowLayout",
    "check_implemented",
]
