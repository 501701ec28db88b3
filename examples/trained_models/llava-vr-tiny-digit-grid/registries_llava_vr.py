# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The axes of variation of LLaVA-VR, one registry each: name -> one-line description.

The config's `Literal` fields, the command-line choices, the tests' parametrisations, the benchmark variants and the
model-card text all read these dictionaries. Adding a projector (interaction, saliency mode) means adding its class
in its own file (`projectors_llava_vr.py`, `vision_remember_llava_vr.py`, `saliency_llava_vr.py`) and one line here;
the implementation files check at import that they implement exactly the names registered here.
Torch-free, so the config (and `--help`) can import it cheaply.
"""

from typing import Literal


PROJECTORS = {
    "mlp": "LLaVA-NeXT's two-layer GELU MLP, no compression",
    "adaptive_avg_pool": "2D adaptive average pooling of each tile's patch grid, then the two-layer MLP",
    "pixel_shuffle": "2×2 space-to-depth (InternVL), LayerNorm, then the two-layer MLP",
    "ldpv2": "MobileVLM-v2 LDPv2: MLP, 2×2 average pooling, depthwise-conv positional residual (PEG)",
    "tokenpacker": "TokenPacker: pooled queries re-read their region of the full-resolution features, then the MLP",
}
"""Projectors (`projector_type`); every one but `mlp` compresses a tile to `projector_pooled_grid_size**2` tokens."""

VR_INTERACTIONS = {
    "sela": "saliency-enhanced local attention: each token reads its window of the multi-level features (paper §4.2)",
    "deformable": "multi-level deformable attention around the token's cell (MoME style; paper Tab. 4b)",
    "global": "plain cross-attention from every token of an image to every feature cell of that image, all tiles "
    "(paper Tab. 4b)",
    "global_tile": "cross-attention from every token to every feature cell of its own tile only (this package's "
    "`global` before it followed the paper; kept so those checkpoints load unchanged)",
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

ProjectorType = Literal[tuple(PROJECTORS)]
VisionRememberInteraction = Literal[tuple(VR_INTERACTIONS)]
SaliencyMode = Literal[tuple(SALIENCY_MODES)]


def check_implemented(registry: dict, implemented, axis: str) -> None:
    """Raises `ValueError` when an implementation file and its registry name different variants."""
    if set(registry) != set(implemented):
        raise ValueError(f"{axis}: registered {sorted(registry)} but implemented {sorted(implemented)}")


__all__ = [
    "PROJECTORS",
    "ProjectorType",
    "SALIENCY_MODES",
    "SaliencyMode",
    "VR_INTERACTIONS",
    "VisionRememberInteraction",
    "check_implemented",
]
