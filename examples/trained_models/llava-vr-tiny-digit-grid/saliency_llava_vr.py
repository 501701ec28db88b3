# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Saliency of the vision tower's patches (paper Eq. 3), read from the tower's own q/k projections.

`S_p = mean_h sigmoid(q_h . k_{h,p} / sqrt(d))` with `q` the CLS row (`cls`) or the mean of all query rows
(`mean_token`, for towers without CLS such as SigLIP). Forward hooks on the saliency layer's `q_proj` and `k_proj`
record their outputs while the tower runs, so the tower keeps its sdpa/flash attention (no `output_attentions`, no
`(1+G) x (1+G)` maps) and the projections run inside their own layer's forward (FSDP2 / ZeRO-3 safe).
"""

import torch
from torch import nn

from .registries_llava_vr import SALIENCY_MODES, check_implemented


# How each recorded mode reduces the layer's query rows `(T, N, width)` to one query per tile `(T, 1, width)`;
# `auto` resolves to one of them in the config, `off` records nothing.
SALIENCY_QUERIES = {
    "cls": lambda queries: queries[:, :1],
    "mean_token": lambda queries: queries.mean(dim=1, keepdim=True),
}
check_implemented(SALIENCY_MODES, [*SALIENCY_QUERIES, "auto", "off"], "vision_remember_saliency")


class SaliencyRecorder:
    """Records `q_proj` / `k_proj` outputs of one encoder layer's attention while `recording`; `pop()` gives `(T, N)`.

    The layer is never gradient-checkpointed (`keep_unchecked`): reentrant checkpointing runs its forward without
    autograd, so the recorded q/k would carry no graph and the saliency no gradient to the tower."""

    def __init__(self, encoder_layer: nn.Module, num_heads: int, mode: str):
        if mode not in SALIENCY_QUERIES:
            raise ValueError(f"saliency mode {mode!r} has no recorder")
        self.encoder_layer = encoder_layer
        self.num_heads, self.mode = num_heads, mode
        self.recording = False
        self._query = self._keys = None
        encoder_layer.self_attn.q_proj.register_forward_hook(self._record_query)
        encoder_layer.self_attn.k_proj.register_forward_hook(self._record_keys)

    def keep_unchecked(self):
        """Turns gradient checkpointing off for the recorded layer (one tower layer's activations kept)."""
        if getattr(self.encoder_layer, "gradient_checkpointing", False):
            self.encoder_layer.gradient_checkpointing = False

    def _record_query(self, module, args, output):
        if self.recording:
            self._query = SALIENCY_QUERIES[self.mode](output)

    def _record_keys(self, module, args, output):
        if self.recording:
            self._keys = output

    def pop(self) -> torch.Tensor:
        """Saliency of every token of the recorded layer, `(T, N)` (the caller drops prefix tokens)."""
        if self._query is None or self._keys is None:
            raise RuntimeError("the saliency layer did not run: is vision_remember_saliency_layer within the tower?")
        query, keys = self._query, self._keys
        self._query = self._keys = None
        tiles, tokens, width = keys.shape
        head_dim = width // self.num_heads
        query = query.view(tiles, 1, self.num_heads, head_dim).transpose(1, 2)  # (T, H, 1, d)
        keys = keys.view(tiles, tokens, self.num_heads, head_dim).transpose(1, 2)  # (T, H, N, d)
        scores = (query.float() @ keys.float().transpose(-1, -2)) * head_dim**-0.5  # (T, H, 1, N)
        return torch.sigmoid(scores).mean(dim=1)[:, 0]


def tower_encoder_layers(vision_tower: nn.Module) -> nn.ModuleList:
    """The encoder layers of a CLIP/SigLIP vision tower (with or without a `.vision_model` wrapper)."""
    inner = getattr(vision_tower, "vision_model", vision_tower)
    return inner.encoder.layers


__all__ = ["SALIENCY_QUERIES", "SaliencyRecorder", "tower_encoder_layers"]
