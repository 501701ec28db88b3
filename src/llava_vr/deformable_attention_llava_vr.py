# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""`deformable`: multi-level deformable cross-attention (Deformable DETR / MoME) for Vision Remember.

Each head samples `points` bilinear locations per feature level around the token's cell centre, offsets and weights
predicted from the token; the levels are the tower layers of the multi-level features. Both formulations of
`token_feature_attention_llava_vr.py`: plain (values projected for every cell, then sampled) and absorbed (the
normalised features sampled with the same weights — one `embedding_bag` — then projected once per token and head).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init

from .initialization_llava_vr import ZeroInitLinear
from .token_feature_attention_llava_vr import TokenFeatureAttention
from .vision_remember_inputs_llava_vr import VisionRememberInputs


class DeformableSamplingOffsets(nn.Linear):
    """`(Nv, d) -> (Nv, H * levels * points * 2)` offsets `(dy, dx)` in feature cells. Starts as in Deformable DETR:
    zero weights, bias = a ring of `points` growing radii in one direction per head."""

    def __init__(self, hidden_size: int, num_heads: int, num_levels: int, num_points: int):
        super().__init__(hidden_size, num_heads * num_levels * num_points * 2)
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points

    def init_llava_vr(self):
        init.zeros_(self.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        ring = torch.stack((angles.sin(), angles.cos()), -1)  # (H, 2) as (dy, dx)
        ring = ring / ring.abs().max(-1, keepdim=True).values
        radii = torch.arange(1, self.num_points + 1, dtype=torch.float32)
        bias = ring[:, None, None, :] * radii[None, None, :, None]  # (H, 1, P, 2)
        init.copy_(self.bias, bias.expand(-1, self.num_levels, -1, -1).reshape(-1))


class TokenFeatureDeformableAttention(TokenFeatureAttention):
    """`deformable`: `(Nv, d) -> (Nv, d)`; per-level features `C_l = C / levels` share one LayerNorm and `v_proj`."""

    normalizes_per_level = True

    def __init__(self, hidden_size: int, feature_size: int, num_heads: int, num_levels: int, num_points: int):
        super().__init__(hidden_size, feature_size // num_levels, num_heads, with_keys=False)
        self.num_levels, self.num_points = num_levels, num_points
        self.sampling_offsets = DeformableSamplingOffsets(hidden_size, num_heads, num_levels, num_points)
        self.attention_weights = ZeroInitLinear(hidden_size, num_heads * num_levels * num_points)

    @classmethod
    def from_config(cls, config) -> "TokenFeatureDeformableAttention":
        levels = len(config.vision_remember_feature_layers)
        return cls(
            config.vision_remember_hidden_size,
            config.vision_remember_feature_size,
            config.vision_remember_num_heads,
            levels,
            config.vision_remember_deformable_points,
        )

    def samples(self, tokens: torch.Tensor, inputs: VisionRememberInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each head reads and with what weight: `rows` `(Nv, H, levels*P*4)` into the per-level feature table
        (row `(tile * G*G + cell) * levels + level`) and `weights` of the same shape (attention x bilinear corner x
        inside the tile; the saliency is not included), in `tokens`' dtype. The sampling locations are computed in fp32:
        in bf16 a location on a 24-cell grid would be rounded to 1/8 of a cell."""
        num_tokens, heads, levels, points = tokens.shape[0], self.num_heads, self.num_levels, self.num_points
        grid, g = inputs.feature_grid, inputs.token_grid
        normed = self.query_norm(tokens)
        offsets = self.sampling_offsets(normed).float().view(num_tokens, heads, levels, points, 2)
        weights = self.attention_weights(normed).float().view(num_tokens, heads, levels * points).softmax(-1)
        cell = inputs.token_cell.to(tokens.device)
        centre = torch.stack((cell // g, cell % g), -1).float()
        centre = (centre + 0.5) * (grid / g) - 0.5  # token cell centre in feature-grid coordinates (y, x)
        location = centre[:, None, None, None, :] + offsets  # (Nv, H, levels, P, 2)
        low = location.floor()
        frac = location - low
        corners = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], device=tokens.device)
        corner_yx = low.long()[..., None, :] + corners  # (Nv, H, levels, P, 4, 2)
        corner_w = torch.where(corners.bool(), frac[..., None, :], 1 - frac[..., None, :]).prod(-1)
        inside = ((corner_yx >= 0) & (corner_yx < grid)).all(-1)
        corner_yx = corner_yx.clamp(0, grid - 1)
        cell_index = inputs.token_tile.to(tokens.device)[:, None, None, None, None] * grid * grid
        cell_index = cell_index + corner_yx[..., 0] * grid + corner_yx[..., 1]
        level = torch.arange(levels, device=tokens.device)[None, None, :, None, None]
        rows = cell_index * levels + level  # (Nv, H, levels, P, 4)
        sample_weights = weights.view(num_tokens, heads, levels, points, 1) * corner_w * inside
        return rows.flatten(2), sample_weights.flatten(2).to(tokens.dtype)

    def attend_plain(self, tokens: torch.Tensor, inputs: VisionRememberInputs) -> torch.Tensor:
        features = inputs.features.to(tokens.device, tokens.dtype)
        features = self.feature_norm(features.unflatten(-1, (self.num_levels, -1)))  # (T, G*G, levels, C_l)
        values = self.v_proj(features) * inputs.saliency.to(tokens.device, tokens.dtype)[..., None, None]
        values = values.reshape(-1, self.head_dim)  # rows ((tile * G*G + cell) * levels + level) * H + head
        rows, weights = self.samples(tokens, inputs)
        head = torch.arange(self.num_heads, device=tokens.device)[None, :, None]
        sampled = values[rows * self.num_heads + head]  # (Nv, H, S, hd)
        return (sampled * weights[..., None]).sum(2).reshape(tokens.shape)

    def attend_absorbed(self, tokens: torch.Tensor, inputs: VisionRememberInputs) -> torch.Tensor:
        level_width = self.feature_norm.normalized_shape[0]
        table = inputs.normalized_features.to(tokens.device, tokens.dtype).reshape(-1, level_width)
        saliency = inputs.saliency.to(tokens.device, tokens.dtype).flatten().repeat_interleave(self.num_levels)
        rows, weights = self.samples(tokens, inputs)
        weights = (weights * saliency[rows]).to(table.dtype)  # autocast: fp32 softmax, a bf16 / fp16 table
        aggregated = F.embedding_bag(
            rows.flatten(0, 1), table, per_sample_weights=weights.flatten(0, 1), mode="sum"
        )  # (Nv * H, C_l)
        return self.absorbed_values(aggregated.view(*rows.shape[:2], table.shape[-1]), weights.sum(-1))

    def formulation_flops(self, inputs: VisionRememberInputs, num_tokens: int) -> dict[str, int]:
        cells, level_width, hidden = self._feature_sizes(inputs)
        samples = self.num_heads * self.num_levels * self.num_points * 4
        return {
            "plain": 2 * cells * self.num_levels * level_width * hidden + 2 * num_tokens * samples * self.head_dim,
            "absorbed": 2 * num_tokens * hidden * level_width + 2 * num_tokens * samples * level_width,
        }


__all__ = ["DeformableSamplingOffsets", "TokenFeatureDeformableAttention"]
