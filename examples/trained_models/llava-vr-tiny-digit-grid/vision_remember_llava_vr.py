# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Vision Remember: the compressed vision tokens re-read multi-level vision features inside the LLM.

Before a configured decoder layer, the vision-token rows `x` of the hidden states (newline tokens excluded) go
through: RMSNorm -> MLP expand `D -> d` (d = the multi-level feature width by default, paper §4.2: "expand its
dimension by a MLP layer to match the vision features dimension") -> token-feature cross-attention (`sela` |
`global` | `global_tile` | `deformable`) -> token bidirectional self-attention among one image's tokens (paper v2;
off reproduces v1) -> LayerNorm -> `d -> D` output projection, added back to `x`. The output projection starts at
zero, so a fresh module is the identity.

Everything per batch (token positions, tiles, windows, groups, normalised features) is computed once per forward in
`VisionRememberInputs` (`VisionRemember.prepare_inputs`) and shared by every VR layer; each layer then runs batched
gathers and one attention call per attention, with no Python loop over images, tiles, windows or tokens.

Adding an interaction: its cross-attention class (a `TokenFeatureAttention` declaring what it reads of
`VisionRememberInputs` and checking its settings in `check_config`), one line in `CROSS_ATTENTION_CLASSES` and one in
`registries_llava_vr.VR_INTERACTIONS`.
"""

import torch
from torch import nn
from torch.nn import functional as F
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

from .deformable_attention_llava_vr import TokenFeatureDeformableAttention
from .initialization_llava_vr import ZeroInitLinear
from .registries_llava_vr import VR_INTERACTIONS, check_implemented
from .token_feature_attention_llava_vr import (
    TokenFeatureGlobalAttention,
    TokenFeatureLocalAttention,
    TokenFeatureTileAttention,
)
from .vision_remember_inputs_llava_vr import VisionRememberFeatures, VisionRememberInputs, group_slots

CROSS_ATTENTION_CLASSES = {
    "sela": TokenFeatureLocalAttention,
    "global": TokenFeatureGlobalAttention,
    "global_tile": TokenFeatureTileAttention,
    "deformable": TokenFeatureDeformableAttention,
}
check_implemented(VR_INTERACTIONS, CROSS_ATTENTION_CLASSES, "vision_remember_interaction")


class TokenBidirectionalSelfAttention(nn.Module):
    """The vision tokens of one image attend to each other without the causal mask (tokens grouped per image)."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, hidden_size // num_heads
        self.norm = nn.LayerNorm(hidden_size)
        self.qkv_proj = nn.Linear(hidden_size, 3 * hidden_size)
        self.o_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, tokens: torch.Tensor, inputs: VisionRememberInputs) -> torch.Tensor:
        image, slot = inputs.image_index.to(tokens.device), inputs.image_slot.to(tokens.device)
        qkv = self.qkv_proj(self.norm(tokens))
        grouped = qkv.new_zeros(inputs.num_images, inputs.max_image_tokens, qkv.shape[-1])
        grouped[image, slot] = qkv
        present = torch.zeros(grouped.shape[:2], dtype=torch.bool, device=tokens.device)
        present[image, slot] = True
        q, k, v = grouped.view(*grouped.shape[:2], 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=present[:, None, None, :])
        return self.o_proj(attended.transpose(1, 2)[image, slot].reshape(tokens.shape))


class VisionRemember(GradientCheckpointingLayer):
    """One Vision Remember module: rewrites the vision-token rows of `(batch, seq, D)` hidden states."""

    def __init__(self, config):
        super().__init__()
        text_size = config.text_config.hidden_size
        hidden = config.vision_remember_hidden_size
        heads = config.vision_remember_num_heads
        self.input_norm = Qwen2RMSNorm(text_size, eps=config.text_config.rms_norm_eps)
        self.expand_in = nn.Linear(text_size, hidden)
        self.act = nn.GELU()
        self.expand_out = nn.Linear(hidden, hidden)
        cross_attention_class = CROSS_ATTENTION_CLASSES[config.vision_remember_interaction]
        cross_attention_class.check_config(config)
        self.cross_attention = cross_attention_class.from_config(config)
        self.self_attention = (
            TokenBidirectionalSelfAttention(hidden, heads) if config.vision_remember_self_attention else None
        )
        self.output_norm = nn.LayerNorm(hidden)
        self.output_proj = ZeroInitLinear(hidden, text_size)  # a fresh module adds nothing

    @staticmethod
    def prepare_inputs(
        vision_mask: torch.Tensor, image_features: VisionRememberFeatures, config
    ) -> VisionRememberInputs:
        """What every VR layer of one forward reads (`VisionRememberInputs.build`), as the configured interaction's
        class declares it. `vision_mask`: `(batch, seq)` bool, the `<image>` positions."""
        interaction = CROSS_ATTENTION_CLASSES[config.vision_remember_interaction]
        return VisionRememberInputs.build(vision_mask, image_features, config, interaction)

    def forward(
        self, hidden_states: torch.Tensor, vision_remember_inputs: VisionRememberInputs, *input_tensors: torch.Tensor
    ) -> torch.Tensor:
        """`(batch, seq, D) -> (batch, seq, D)`. `input_tensors`: `vision_remember_inputs.tensors`, passed explicitly
        so that reentrant gradient checkpointing sees them (it ignores tensors inside a dataclass); used instead of
        the dataclass's own when given."""
        inputs = vision_remember_inputs.with_tensors(*input_tensors)
        flat = hidden_states.flatten(0, 1)
        positions = inputs.positions.to(flat.device)
        tokens = self.expand_out(self.act(self.expand_in(self.input_norm(flat[positions]))))
        tokens = tokens + self.cross_attention(tokens, inputs)
        if self.self_attention is not None:
            tokens = tokens + self.self_attention(tokens, inputs)
        update = self.output_proj(self.output_norm(tokens))
        return flat.index_add(0, positions, update.to(flat.dtype)).view_as(hidden_states)


__all__ = [
    "CROSS_ATTENTION_CLASSES",
    "TokenBidirectionalSelfAttention",
    "VisionRemember",
    "VisionRememberFeatures",
    "VisionRememberInputs",
    "group_slots",
]
