# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Saliency of the vision tower's patches (paper Eq. 3), read from the tower's own q/k projections.

`S_p = mean_h sigmoid(q_h . k_{h,p} / sqrt(d))` with `q` the CLS row (`cls`) or the mean of all query rows
(`mean_token`, for towers without CLS such as SigLIP). While the tower encodes the images, forward hooks on the
saliency layer's `self_attn.q_proj` / `k_proj` record their outputs, so:

- the tower keeps its sdpa/flash attention (no `output_attentions`, no `(1+G) x (1+G)` maps);
- the projections run inside their own layer's forward (FSDP2 / ZeRO-3 unshard them there);
- the saliency uses whatever modules sit there *at that encoding*: the hooks are registered on the modules resolved
  just before the tower runs and removed right after, so a PEFT LoRA wrapper (adapted output, equal to its merged
  model), a bitsandbytes / `quantize_dynamic` replacement, or an Accelerate-offloaded Linear is the module observed,
  never one that was swapped out after `__init__`.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

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


def tower_encoder_layers(vision_tower: nn.Module) -> nn.ModuleList:
    """The encoder layers of a CLIP/SigLIP vision tower (with or without a `.vision_model` wrapper)."""
    inner = getattr(vision_tower, "vision_model", vision_tower)
    return inner.encoder.layers


class SaliencyRecorder:
    """Saliency from encoder layer `layer_index` of a tower: `with recorder.recording(tower):` run the tower, then
    `pop()` gives `(T, N)`.

    Holds no module, so a `copy.deepcopy` of the model (TRL's reference model) or any later wrapping of the tower's
    Linears is seen as it is. Gradient checkpointing may cover the recorded layer (`checkpoint_without_reentry`)."""

    def __init__(self, layer_index: int, num_heads: int, mode: str):
        if mode not in SALIENCY_QUERIES:
            raise ValueError(f"saliency mode {mode!r} has no recorder")
        self.layer_index, self.num_heads, self.mode = layer_index, num_heads, mode
        self._query = self._keys = None

    def encoder_layer(self, vision_tower: nn.Module) -> nn.Module:
        return tower_encoder_layers(vision_tower)[self.layer_index]

    @contextmanager
    def recording(self, vision_tower: nn.Module) -> Iterator["SaliencyRecorder"]:
        """Inside the block, the outputs of the modules now at the recorded layer's `self_attn.q_proj` / `k_proj`
        are kept (the latest call of each)."""
        attention = self.encoder_layer(vision_tower).self_attn
        self._query = self._keys = None
        handles = [
            attention.q_proj.register_forward_hook(self._record_query),
            attention.k_proj.register_forward_hook(self._record_keys),
        ]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def checkpoint_without_reentry(self, vision_tower: nn.Module):
        """Makes the recorded layer's gradient checkpointing (if any) non-reentrant, whatever the other layers use.

        Reentrant checkpointing runs a layer's forward under `no_grad`, so recorded q/k would carry no graph and the
        saliency no gradient to the tower; non-reentrant checkpointing runs it with autograd on and still drops the
        layer's activations (recomputed in the backward pass), so the layer stays checkpointed."""
        layer = self.encoder_layer(vision_tower)
        function = getattr(layer, "_gradient_checkpointing_func", None)
        if function is not None:
            layer._gradient_checkpointing_func = partial(function, use_reentrant=False)

    def _record_query(self, module, args, output):
        self._query = SALIENCY_QUERIES[self.mode](output)

    def _record_keys(self, module, args, output):
        self._keys = output

    def pop(self) -> torch.Tensor:
        """Saliency of every token of the recorded layer, `(T, N)` (the caller drops prefix tokens)."""
        if self._query is None or self._keys is None:
            raise RuntimeError(
                "the saliency layer's q_proj / k_proj did not run: is vision_remember_saliency_layer within the tower?"
            )
        query, keys = self._query, self._keys
        self._query = self._keys = None
        tiles, tokens, width = keys.shape
        head_dim = width // self.num_heads
        query = query.reshape(tiles, 1, self.num_heads, head_dim).transpose(1, 2)  # (T, H, 1, d)
        keys = keys.reshape(tiles, tokens, self.num_heads, head_dim).transpose(1, 2)  # (T, H, N, d)
        scores = (query.float() @ keys.float().transpose(-1, -2)) * head_dim**-0.5  # (T, H, 1, N)
        return torch.sigmoid(scores).mean(dim=1)[:, 0]


__all__ = ["SALIENCY_QUERIES", "SaliencyRecorder", "tower_encoder_layers"]
