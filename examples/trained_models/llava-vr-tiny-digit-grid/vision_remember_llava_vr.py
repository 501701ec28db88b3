# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Vision Remember: the compressed vision tokens re-read multi-level vision features inside the LLM.

Before a configured decoder layer, the vision-token rows `x` of the hidden states (newline tokens excluded) go
through: RMSNorm -> MLP expand `D -> d` -> token-feature cross-attention (`sela` | `global` | `deformable`) ->
token bidirectional self-attention among one image's tokens -> LayerNorm -> `d -> D` output projection, added back to
`x`. The output projection starts at zero, so a fresh module is the identity.

Everything per batch (token positions, tiles, windows, groups) is computed once per forward in
`VisionRememberInputs` and shared by every VR layer; each layer then runs one batched gather and one SDPA call per
attention, with no Python loop over images, tiles, windows or tokens.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

from .feature_windows_llava_vr import feature_window_index
from .initialization_llava_vr import ZeroInitLinear
from .registries_llava_vr import VR_INTERACTIONS, check_implemented


def group_slots(groups: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, int]:
    """Position of every element within its group, for packing `(N,)` elements into `(num_groups, max_size)`.

    Returns `slot` `(N,)` (elements keep their relative order) and `max_size`.
    """
    if groups.numel() == 0:
        return groups.clone(), 0
    order = torch.sort(groups, stable=True).indices
    counts = torch.bincount(groups, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(groups)
    slot[order] = torch.arange(groups.numel(), device=groups.device) - starts[groups[order]]
    return slot, int(counts.max())


@dataclass
class VisionRememberInputs:
    """What every VR layer of one forward reads. `Nv` = vision tokens VR rewrites (newline tokens excluded).

    Attributes:
        positions: `(Nv,)` rows of the flattened `(batch * seq, D)` hidden states.
        features: `(num_tiles, G*G, C_ml)` multi-level tower features of every tile in the batch.
        saliency: `(num_tiles, G*G)` saliency of every feature cell (ones when saliency is off).
        token_tile: `(Nv,)` tile (row of `features`) of each token.
        token_cell: `(Nv,)` cell `row * g + col` of each token in its tile's `g x g` token grid.
        image_index, image_slot: `(Nv,)` image of each token and its position among that image's tokens.
        tile_slot: `(Nv,)` position of each token among its tile's tokens.
        window_index, window_valid: `(Nv, L)` SELA windows as rows of `features.flatten(0, 1)`, and their mask.
    """

    positions: torch.Tensor
    features: torch.Tensor
    saliency: torch.Tensor
    token_tile: torch.Tensor
    token_cell: torch.Tensor
    image_index: torch.Tensor
    image_slot: torch.Tensor
    tile_slot: torch.Tensor
    window_index: torch.Tensor
    window_valid: torch.Tensor
    num_images: int
    max_image_tokens: int
    max_tile_tokens: int
    token_grid: int
    feature_grid: int

    @classmethod
    def from_deepstack(
        cls, vision_mask: torch.Tensor, deepstack_features: list, token_grid: int, window_size: int | None = None
    ) -> "VisionRememberInputs":
        """`build` from an image-feature output's `deepstack_features`: the per-image lists
        `[features, saliency, token_cells]`, in that order (a plain list, so that `generate()` can expand it)."""
        features, saliency, token_cells = deepstack_features
        return cls.build(vision_mask, features, saliency, token_cells, token_grid, window_size)

    @classmethod
    def build(
        cls,
        vision_mask: torch.Tensor,
        features: list[torch.Tensor],
        saliency: list[torch.Tensor],
        token_cells: list[torch.Tensor],
        token_grid: int,
        window_size: int | None = None,
    ) -> "VisionRememberInputs":
        """
        Args:
            vision_mask: `(batch, seq)` bool, the `<image>` positions (packed image tokens in order).
            features: per image `(tiles_i, G*G, C_ml)`.
            saliency: per image `(tiles_i, G*G)`.
            token_cells: per image `(tokens_i, 3)` `(tile, row, col)`, `-1` rows for newlines.
        """
        device = vision_mask.device
        all_positions = vision_mask.flatten().nonzero().squeeze(1)
        cells = torch.cat(token_cells).to(device)
        if all_positions.numel() != cells.shape[0]:
            raise ValueError(
                f"Image features and image tokens do not match, tokens: {all_positions.numel()}, features: "
                f"{cells.shape[0]}: Vision Remember needs every token of an image in one forward (chunked prefill "
                "or truncation through an image is not supported)"
            )
        tiles_per_image = torch.tensor([f.shape[0] for f in features], device=device)
        tokens_per_image = torch.tensor([c.shape[0] for c in token_cells], device=device)
        num_images = len(features)
        image_of_token = torch.repeat_interleave(torch.arange(num_images, device=device), tokens_per_image)
        valid = cells[:, 0] >= 0
        image_index = image_of_token[valid]
        tile_offset = torch.cumsum(tiles_per_image, 0) - tiles_per_image
        token_tile = cells[valid, 0] + tile_offset[image_index]
        token_cell = cells[valid, 1] * token_grid + cells[valid, 2]
        # one image (the usual prefill): use its tensor as is, `cat` would copy every multi-level feature again
        features_cat = features[0] if len(features) == 1 else torch.cat(features)
        feature_grid = math.isqrt(features_cat.shape[1])
        cells_per_tile = feature_grid * feature_grid
        index, window_valid = feature_window_index(token_grid, feature_grid, window_size, device=device)
        image_slot, max_image_tokens = group_slots(image_index, num_images)
        tile_slot, max_tile_tokens = group_slots(token_tile, features_cat.shape[0])
        return cls(
            positions=all_positions[valid],
            features=features_cat,
            saliency=saliency[0] if len(saliency) == 1 else torch.cat(saliency),
            token_tile=token_tile,
            token_cell=token_cell,
            image_index=image_index,
            image_slot=image_slot,
            tile_slot=tile_slot,
            window_index=token_tile[:, None] * cells_per_tile + index[token_cell],
            window_valid=window_valid[token_cell],
            num_images=num_images,
            max_image_tokens=max_image_tokens,
            max_tile_tokens=max_tile_tokens,
            token_grid=token_grid,
            feature_grid=feature_grid,
        )


class TokenFeatureAttention(nn.Module):
    """Base of the token-feature cross-attentions: queries from the tokens, keys/values from the features."""

    def __init__(self, hidden_size: int, feature_size: int, num_heads: int, with_keys: bool = True):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, hidden_size // num_heads
        self.query_norm = nn.LayerNorm(hidden_size)
        self.feature_norm = nn.LayerNorm(feature_size)
        if with_keys:  # dot-product attention; deformable attention predicts its weights from the query instead
            self.q_proj = nn.Linear(hidden_size, hidden_size)
            self.k_proj = nn.Linear(feature_size, hidden_size)
        self.v_proj = nn.Linear(feature_size, hidden_size)
        self.o_proj = nn.Linear(hidden_size, hidden_size)

    @classmethod
    def from_config(cls, config) -> "TokenFeatureAttention":
        """The interaction at VR's width, reading `levels x tower width` multi-level features."""
        return cls(
            config.vision_remember_hidden_size_resolved,
            config.vision_config.hidden_size * len(config.vision_remember_feature_layers),
            config.vision_remember_num_heads_resolved,
        )

    def queries(self, tokens: torch.Tensor) -> torch.Tensor:
        """`(Nv, d) -> (Nv, H, 1, hd)`."""
        return self.q_proj(self.query_norm(tokens)).view(-1, self.num_heads, 1, self.head_dim)

    def keys_values(self, inputs: VisionRememberInputs, like: torch.Tensor):
        """`(num_tiles, G*G, d)` keys and saliency-weighted values."""
        features = self.feature_norm(inputs.features.to(like.device, like.dtype))
        values = self.v_proj(features) * inputs.saliency.to(like.device, like.dtype)[..., None]
        return self.k_proj(features), values


class TokenFeatureLocalAttention(TokenFeatureAttention):
    """`sela`: each token attends to its window of the multi-level features, values weighted by saliency."""

    def forward(self, tokens: torch.Tensor, inputs: VisionRememberInputs) -> torch.Tensor:
        keys, values = self.keys_values(inputs, tokens)
        window = inputs.window_index.to(tokens.device)
        shape = (*window.shape, self.num_heads, self.head_dim)  # (Nv, L, H, hd)
        keys = keys.flatten(0, 1)[window].view(shape).transpose(1, 2)
        values = values.flatten(0, 1)[window].view(shape).transpose(1, 2)
        mask = inputs.window_valid.to(tokens.device)[:, None, None, :]
        attended = F.scaled_dot_product_attention(self.queries(tokens), keys, values, attn_mask=mask)
        return self.o_proj(attended.reshape(tokens.shape))


class TokenFeatureGlobalAttention(TokenFeatureAttention):
    """`global`: each token attends to all feature cells of its tile (tokens grouped per tile, one SDPA)."""

    def forward(self, tokens: torch.Tensor, inputs: VisionRememberInputs) -> torch.Tensor:
        keys, values = self.keys_values(inputs, tokens)
        num_tiles = keys.shape[0]
        tile, slot = inputs.token_tile.to(tokens.device), inputs.tile_slot.to(tokens.device)
        queries = self.queries(tokens)[:, :, 0]  # (Nv, H, hd)
        grouped = queries.new_zeros(num_tiles, inputs.max_tile_tokens, self.num_heads, self.head_dim)
        grouped[tile, slot] = queries
        split = (num_tiles, -1, self.num_heads, self.head_dim)
        attended = F.scaled_dot_product_attention(
            grouped.transpose(1, 2), keys.view(split).transpose(1, 2), values.view(split).transpose(1, 2)
        ).transpose(1, 2)  # (tiles, max_tile_tokens, H, hd)
        return self.o_proj(attended[tile, slot].reshape(tokens.shape))


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
    """`deformable`: multi-level deformable cross-attention (Deformable DETR / MoME). Each head samples
    `points` bilinear locations per feature level around the token's cell centre, offsets and weights predicted
    from the token; the levels are the tower layers of the multi-level features."""

    def __init__(self, hidden_size: int, feature_size: int, num_heads: int, num_levels: int, num_points: int):
        super().__init__(hidden_size, feature_size // num_levels, num_heads, with_keys=False)
        self.num_levels, self.num_points = num_levels, num_points
        self.sampling_offsets = DeformableSamplingOffsets(hidden_size, num_heads, num_levels, num_points)
        self.attention_weights = ZeroInitLinear(hidden_size, num_heads * num_levels * num_points)

    @classmethod
    def from_config(cls, config) -> "TokenFeatureDeformableAttention":
        levels = len(config.vision_remember_feature_layers)
        return cls(
            config.vision_remember_hidden_size_resolved,
            config.vision_config.hidden_size * levels,
            config.vision_remember_num_heads_resolved,
            levels,
            config.vision_remember_deformable_points,
        )

    def forward(self, tokens: torch.Tensor, inputs: VisionRememberInputs) -> torch.Tensor:
        num_tokens, heads, levels, points, head_dim = tokens.shape[0], self.num_heads, self.num_levels, self.num_points, self.head_dim
        grid, g = inputs.feature_grid, inputs.token_grid
        features = inputs.features.to(tokens.device, tokens.dtype)
        features = self.feature_norm(features.unflatten(-1, (levels, -1)))  # (tiles, G*G, levels, C)
        values = self.v_proj(features) * inputs.saliency.to(tokens.device, tokens.dtype)[..., None, None]
        values = values.reshape(-1, head_dim)  # rows ((tile * G*G + cell) * levels + level) * H + head
        normed = self.query_norm(tokens)
        offsets = self.sampling_offsets(normed).view(num_tokens, heads, levels, points, 2)
        weights = self.attention_weights(normed).view(num_tokens, heads, levels * points).softmax(-1)
        cell = inputs.token_cell.to(tokens.device)
        centre = torch.stack((cell // g, cell % g), -1).to(tokens.dtype)
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
        head = torch.arange(heads, device=tokens.device)[None, :, None, None, None]
        sampled = values[(cell_index * levels + level) * heads + head]  # (Nv, H, levels, P, 4, hd)
        sampled = (sampled * (corner_w * inside)[..., None]).sum(-2).flatten(2, 3)  # (Nv, H, levels*P, hd)
        attended = (sampled * weights[..., None]).sum(2)  # (Nv, H, hd)
        return self.o_proj(attended.reshape(tokens.shape))


CROSS_ATTENTION_CLASSES = {
    "sela": TokenFeatureLocalAttention,
    "global": TokenFeatureGlobalAttention,
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
        hidden = config.vision_remember_hidden_size_resolved
        heads = config.vision_remember_num_heads_resolved
        self.input_norm = Qwen2RMSNorm(text_size, eps=config.text_config.rms_norm_eps)
        self.expand_in = nn.Linear(text_size, hidden)
        self.act = nn.GELU()
        self.expand_out = nn.Linear(hidden, hidden)
        self.cross_attention = CROSS_ATTENTION_CLASSES[config.vision_remember_interaction].from_config(config)
        self.self_attention = (
            TokenBidirectionalSelfAttention(hidden, heads) if config.vision_remember_self_attention else None
        )
        self.output_norm = nn.LayerNorm(hidden)
        self.output_proj = ZeroInitLinear(hidden, text_size)  # a fresh module adds nothing

    def forward(self, hidden_states: torch.Tensor, vision_remember_inputs: VisionRememberInputs) -> torch.Tensor:
        inputs = vision_remember_inputs
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
    "TokenFeatureDeformableAttention",
    "TokenFeatureGlobalAttention",
    "TokenFeatureLocalAttention",
    "VisionRemember",
    "VisionRememberInputs",
    "group_slots",
]
