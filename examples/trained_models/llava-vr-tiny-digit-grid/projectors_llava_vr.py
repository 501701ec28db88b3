# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Vision projectors: map one tile's `(G*G, C_in)` tower features to `(g*g, D)` LLM tokens.

| `projector_type`    | tokens per tile (CLIP-336 / SigLIP-384) | what it does                                         |
|---------------------|-----------------------------------------|------------------------------------------------------|
| `mlp`               | 576 / 729                               | LLaVA-NeXT/OneVision's 2-layer MLP, no compression   |
| `adaptive_avg_pool` | 144 / 196                               | 2D adaptive average pooling to g x g, then the MLP   |
| `pixel_shuffle`     | 144 / 196                               | 2x2 space-to-depth (InternVL), LayerNorm, MLP        |
| `ldpv2`             | 144 / 196                               | MobileVLM-v2 LDPv2: MLP, pooling, depthwise-conv PEG |
| `tokenpacker`       | 144 / 196                               | pooled queries re-read their region, then the MLP    |
| `saliency_top_k`    | 144 / 196                               | the g*g most salient patches kept (VisionZip-style)  |

All keep the MLP as `linear_1` / `act` / `linear_2` (the key names of Transformers' LLaVA projectors), so a
LLaVA-NeXT/OneVision projector carries over. Residual layers added on top start as no-ops (zero-initialised PEG conv
and TokenPacker output projection): `tokenpacker` starts as `adaptive_avg_pool`, `ldpv2` as MLP-then-pool.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN

from .feature_windows_llava_vr import feature_window_index
from .initialization_llava_vr import ZeroInitConv2d, ZeroInitLinear
from .registries_llava_vr import PROJECTORS, check_implemented


class LlavaVRMultiModalProjector(nn.Module):
    """`mlp`: `(T, G*G, C_in) -> (T, G*G, D)`, identical to LLaVA-OneVision's projector."""

    # token k of a tile stands for cell k of the g x g token grid: what Vision Remember's windows assume (a token
    # re-reads the features of its own cell's region); False for a projector whose tokens sit elsewhere
    tokens_at_grid_cells = True

    def __init__(self, config, in_features: int | None = None):
        super().__init__()
        num_feature_layers = 1 if isinstance(config.vision_feature_layer, int) else len(config.vision_feature_layer)
        in_features = in_features or config.vision_config.hidden_size * num_feature_layers
        hidden = config.text_config.hidden_size
        self.linear_1 = nn.Linear(in_features, hidden, bias=config.multimodal_projector_bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(hidden, hidden, bias=config.multimodal_projector_bias)
        self.patch_grid = config.patch_grid_size
        self.token_grid = config.token_grid_size

    @classmethod
    def token_grids(cls, patch_grid: int) -> range:
        """Token-grid sides `g` (`g*g` tokens per tile) the projector can produce from a `patch_grid` tile, checked
        by `check_token_budget`: `mlp` (this class) has no budget, it keeps the patch grid; a compressing subclass
        (pooling, selection) any `g` from 1 to the patch grid unless it overrides this."""
        if cls is LlavaVRMultiModalProjector:
            return range(patch_grid, patch_grid + 1)
        return range(1, patch_grid + 1)

    def mlp(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))

    def to_grid(self, features: torch.Tensor) -> torch.Tensor:
        """`(T, G*G, C) -> (T, C, G, G)`."""
        tiles, _, channels = features.shape
        return features.transpose(1, 2).reshape(tiles, channels, self.patch_grid, self.patch_grid)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)


class LlavaVRAdaptivePoolProjector(LlavaVRMultiModalProjector):
    """`adaptive_avg_pool`: pool `(T, G*G, C)` to `(T, g*g, C)`, then the MLP."""

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(self.to_grid(features), self.token_grid)
        return pooled.flatten(2).transpose(1, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.pool(features))


class LlavaVRPixelShuffleProjector(LlavaVRMultiModalProjector):
    """`pixel_shuffle`: zero-pad `G` to even, 2x2 space-to-depth to `(T, g*g, 4C)`, LayerNorm, MLP."""

    def __init__(self, config):
        num_feature_layers = 1 if isinstance(config.vision_feature_layer, int) else len(config.vision_feature_layer)
        in_features = 4 * config.vision_config.hidden_size * num_feature_layers
        super().__init__(config, in_features=in_features)
        self.norm = nn.LayerNorm(in_features)

    @classmethod
    def token_grids(cls, patch_grid: int) -> range:
        """Only `ceil(patch_grid / 2)`: a 2x2 space-to-depth has no other budget."""
        return range(math.ceil(patch_grid / 2), math.ceil(patch_grid / 2) + 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        grid = self.to_grid(features)
        pad = 2 * self.token_grid - self.patch_grid
        grid = F.pad(grid, (0, pad, 0, pad))
        shuffled = F.pixel_unshuffle(grid, 2)  # (T, 4C, g, g)
        return self.mlp(self.norm(shuffled.flatten(2).transpose(1, 2)))


class LlavaVRLDPv2Projector(LlavaVRMultiModalProjector):
    """`ldpv2` (MobileVLM v2): MLP at full resolution, adaptive pooling to `g x g`, plus a depthwise 3x3 conv
    positional residual (PEG, zero-initialised)."""

    def __init__(self, config):
        super().__init__(config)
        hidden = config.text_config.hidden_size
        self.peg = ZeroInitConv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden, bias=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(self.to_grid(self.mlp(features)), self.token_grid)
        pooled = pooled + self.peg(pooled)
        return pooled.flatten(2).transpose(1, 2)


class LlavaVRTokenPackerProjector(LlavaVRAdaptivePoolProjector):
    """`tokenpacker`: point-to-region cross-attention. Each pooled query attends to its adaptive window of the
    full-resolution features (one batched gather + one SDPA call); output projection zero-initialised."""

    def __init__(self, config):
        super().__init__(config)
        in_features = self.linear_1.in_features
        self.num_heads = math.gcd(in_features, config.vision_config.num_attention_heads)
        self.query_norm = nn.LayerNorm(in_features)
        self.region_norm = nn.LayerNorm(in_features)
        self.q_proj = nn.Linear(in_features, in_features)
        self.k_proj = nn.Linear(in_features, in_features)
        self.v_proj = nn.Linear(in_features, in_features)
        self.o_proj = ZeroInitLinear(in_features, in_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        tiles, cells, channels = features.shape
        queries = self.pool(features)  # (T, g*g, C)
        index, valid = feature_window_index(self.token_grid, self.patch_grid, device=features.device)
        heads, head_dim = self.num_heads, channels // self.num_heads
        regions = self.region_norm(features)
        keys = self.k_proj(regions)[:, index].view(tiles, -1, index.shape[1], heads, head_dim)  # (T, g*g, L, H, d)
        values = self.v_proj(regions)[:, index].view_as(keys)
        q = self.q_proj(self.query_norm(queries)).view(tiles, -1, 1, heads, head_dim)
        attended = F.scaled_dot_product_attention(
            q.transpose(2, 3), keys.transpose(2, 3), values.transpose(2, 3), attn_mask=valid[None, :, None, None, :]
        )  # (T, g*g, H, 1, d)
        queries = queries + self.o_proj(attended.reshape(tiles, -1, channels))
        return self.mlp(queries)


class LlavaVRSaliencyTopKProjector(LlavaVRMultiModalProjector):
    """`saliency_top_k` (VisionZip-style token selection): keep each tile's `k = g*g` most salient patches of
    `(T, G*G, C)`, in raster order, then the MLP; `(T, g*g, D)`, the same token budget as pooling.

    VisionZip ranks patches by the attention the tower's CLS token pays them; the projector sees neither the CLS
    token (dropped by `vision_feature_select_strategy="default"`) nor the tower's attention weights, so the saliency
    here is the patch feature's L2 norm (the high-norm tokens that carry most of CLIP's attention). Parameter-free:
    the selection is not trained, as in VisionZip; the kept features are passed on unchanged.

    Not a partner for Vision Remember (`tokens_at_grid_cells = False`): a kept patch is not at cell k of a g x g grid,
    so a window of cell k would not be its region; `check_vision_remember_partner` refuses the combination."""

    tokens_at_grid_cells = False

    def select(self, features: torch.Tensor) -> torch.Tensor:
        """`(T, G*G, C) -> (T, g*g, C)`: the `g*g` highest-norm patches of each tile, kept in raster order."""
        keep = features.norm(dim=-1).topk(self.token_grid**2, dim=1).indices.sort(dim=1).values  # (T, k)
        return features.gather(1, keep[..., None].expand(-1, -1, features.shape[-1]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.select(features))


PROJECTOR_CLASSES = {
    "mlp": LlavaVRMultiModalProjector,
    "adaptive_avg_pool": LlavaVRAdaptivePoolProjector,
    "pixel_shuffle": LlavaVRPixelShuffleProjector,
    "ldpv2": LlavaVRLDPv2Projector,
    "tokenpacker": LlavaVRTokenPackerProjector,
    "saliency_top_k": LlavaVRSaliencyTopKProjector,
}

check_implemented(PROJECTORS, PROJECTOR_CLASSES, "projector_type")


def check_token_budget(config) -> None:
    """Raises `ValueError` when `config.projector_type` cannot produce `config.projector_pooled_grid_size` (the token
    budget, `g*g` tokens per tile; `None` = the projector's default) from the tower's patch grid: `mlp` keeps the patch
    grid, `pixel_shuffle` gives `ceil(G / 2)` only, the pooling projectors any `g <= G`. Runs in
    `LlavaVRConfig.validate_architecture` and again when the projector is built (`from_pretrained(path,
    projector_pooled_grid_size=g)` sets the budget after the config's own validation)."""
    patch_grid = config.patch_grid_size
    grid = config.projector_pooled_grid_size
    grid = config.token_grid_size if grid is None else grid
    grids = PROJECTOR_CLASSES[config.projector_type].token_grids(patch_grid)
    if isinstance(grid, bool) or not isinstance(grid, int) or grid not in grids:
        low, high = grids[0], grids[-1]
        can = f"g = {low} to {high} ({low**2} to {high**2} tokens)" if low < high else f"g = {low} ({low**2} tokens)"
        raise ValueError(
            f"projector_pooled_grid_size={grid!r}: projector_type={config.projector_type!r} cannot give that token "
            f"budget from this tower's {patch_grid}x{patch_grid} patch grid per tile; it gives {can} per tile"
        )


def check_vision_remember_partner(config) -> None:
    """Raises `ValueError` when Vision Remember is on (`vision_remember_layers`) with a projector whose tokens are not
    the cells of the token grid (`tokens_at_grid_cells = False`: `saliency_top_k`), because VR's windows would then
    not be the tokens' own regions. Runs where `check_token_budget` does."""
    cls = PROJECTOR_CLASSES[config.projector_type]
    if config.vision_remember_layers and not cls.tokens_at_grid_cells:
        raise ValueError(
            f"projector_type={config.projector_type!r} cannot be used with Vision Remember "
            f"(vision_remember_layers={list(config.vision_remember_layers)}): its tokens are selected patches, not "
            "the cells of a token grid, and Vision Remember's windows are the regions of those cells; set "
            "vision_remember_layers=[] or use a pooling projector"
        )


def build_projector(config) -> LlavaVRMultiModalProjector:
    check_token_budget(config)
    check_vision_remember_partner(config)
    return PROJECTOR_CLASSES[config.projector_type](config)


__all__ = ["PROJECTOR_CLASSES", "build_projector", "check_token_budget", "check_vision_remember_partner"] + [
    cls.__name__ for cls in PROJECTOR_CLASSES.values()
]
