# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""What Vision Remember reads: per image as the image encoder gives it (`VisionRememberFeatures`), and per forward as
every VR layer reads it (`VisionRememberInputs`, computed once per forward).

Token positions, tiles, windows and per-image / per-tile groupings are index tables built here with tensor ops (no
Python loop over images, tiles or tokens); the multi-level features are layer-normalised (without affine) once here
for every VR layer: each layer folds its own LayerNorm's affine into its projections (see
`token_feature_attention_llava_vr.py`). What depends on the interaction (windows, per-level normalisation) is
declared by its cross-attention class (`reads_windows`, `normalizes_per_level`), which `build` is given.
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.nn import functional as F

from .feature_windows_llava_vr import feature_window_index

FEATURE_NORM_EPS = 1e-5  # `nn.LayerNorm`'s default, the eps of every VR feature norm


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


def normalize_features(features: torch.Tensor, groups: int) -> torch.Tensor:
    """LayerNorm without affine over each of `groups` equal channel chunks: `(..., C) -> (..., C)`."""
    chunks = features.unflatten(-1, (groups, -1))
    return F.layer_norm(chunks, chunks.shape[-1:], eps=FEATURE_NORM_EPS).flatten(-2)


class VisionRememberFeatures(NamedTuple):
    """What Vision Remember reads of a batch's images, per image in `<image>` order (`G*G` feature cells per tile).

    The image-feature output carries it in its `deepstack_features` field, the one `generate()` expands for beams /
    `num_return_sequences` (it rebuilds the field as a plain 3-list: read it through
    `LlavaVRImageFeaturesOutput.vision_remember_features`, which names it again).
    """

    features: list[torch.Tensor]
    """Per image `(tiles_i, G*G, C_ml)` multi-level tower features (`C_ml = config.vision_remember_feature_size`)."""
    saliency: list[torch.Tensor]
    """Per image `(tiles_i, G*G)` saliency of every feature cell (ones when saliency is off)."""
    token_cells: list[torch.Tensor]
    """Per image `(tokens_i, 3)` `(tile, row, col)` of each packed vision token, `-1` rows for newline tokens."""


@dataclass
class VisionRememberInputs:
    """What every VR layer of one forward reads. `Nv` = vision tokens VR rewrites (newline tokens excluded),
    `T` = tiles in the batch, `G*G` = feature cells per tile.

    Attributes:
        positions: `(Nv,)` rows of the flattened `(batch * seq, D)` hidden states.
        features: `(T, G*G, C_ml)` multi-level tower features of every tile in the batch.
        normalized_features: `(T, G*G, C_ml)` the same, layer-normalised without affine over the whole width, or
            per feature level for an interaction that `normalizes_per_level` (`deformable`); `None` when only the
            plain formulation runs.
        saliency: `(T, G*G)` saliency of every feature cell (ones when saliency is off).
        token_tile: `(Nv,)` tile (row of `features`) of each token.
        token_cell: `(Nv,)` cell `row * g + col` of each token in its tile's `g x g` token grid.
        image_index, image_slot: `(Nv,)` image of each token and its position among that image's tokens.
        tile_slot: `(Nv,)` position of each token among its tile's tokens.
        cell_image, cell_image_slot: `(T*G*G,)` image of each feature cell and its position among that image's cells.
        window_index, window_valid: `(Nv, L)` windows as rows of `features.flatten(0, 1)`, and their mask: the
            configured windows for an interaction that `reads_windows` (`sela`), else the token's own region (unread).
    """

    positions: torch.Tensor
    features: torch.Tensor
    normalized_features: torch.Tensor | None
    saliency: torch.Tensor
    token_tile: torch.Tensor
    token_cell: torch.Tensor
    image_index: torch.Tensor
    image_slot: torch.Tensor
    tile_slot: torch.Tensor
    cell_image: torch.Tensor
    cell_image_slot: torch.Tensor
    window_index: torch.Tensor
    window_valid: torch.Tensor
    num_images: int
    max_image_tokens: int
    max_tile_tokens: int
    max_image_cells: int
    token_grid: int
    feature_grid: int
    formulation: str = "auto"

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The tensors gradients flow through, to pass to a checkpointed layer as explicit arguments (reentrant
        checkpointing sees only tensor arguments): `(features, saliency[, normalized_features])`."""
        extra = () if self.normalized_features is None else (self.normalized_features,)
        return (self.features, self.saliency, *extra)

    def with_tensors(self, *tensors: torch.Tensor) -> "VisionRememberInputs":
        """A copy reading `tensors` (as returned by `tensors`) instead of its own."""
        if not tensors:
            return self
        features, saliency, *extra = tensors
        normalized = extra[0] if extra else None
        return dataclasses.replace(self, features=features, saliency=saliency, normalized_features=normalized)

    @classmethod
    def build(
        cls,
        vision_mask: torch.Tensor,
        image_features: VisionRememberFeatures,
        config,
        interaction: type,
        token_grid: int | None = None,
        window_size: int | None | str = "config",
        group_by_tile: bool = False,
    ) -> "VisionRememberInputs":
        """
        Args:
            vision_mask: `(batch, seq)` bool, the `<image>` positions (packed image tokens in order).
            image_features: the batch's `VisionRememberFeatures` (or the same three lists in that order).
            config: the `LlavaVRConfig` (token grid, window size and layout, feature levels, formulation).
            interaction: the cross-attention class of `config.vision_remember_interaction`; its `reads_windows` and
                `normalizes_per_level` say which windows and which normalisation to prepare. Callers that hold only
                the config use `VisionRemember.prepare_inputs`, which looks the class up.
            token_grid: side of every tile's token grid; default `config.token_grid_size` (images). Videos pass
                `config.video_token_grid_size` (their frames are tiles of pooled tokens).
            window_size: `sela`'s window; default (`"config"`) `config.vision_remember_window_size`. Videos pass
                `config.video_vision_remember_window_size`.
            group_by_tile: every tile is its own group for the per-image interactions (token self-attention,
                `global`): a video's frames are read one by one, as base tiles of separate images.
        """
        features, saliency, token_cells = image_features
        device = vision_mask.device
        all_positions = vision_mask.flatten().nonzero().squeeze(1)
        cells = torch.cat(token_cells).to(device)
        if all_positions.numel() != cells.shape[0]:
            raise ValueError(
                f"Image features and image tokens do not match, tokens: {all_positions.numel()}, features: "
                f"{cells.shape[0]}: Vision Remember needs every token of an image in one forward (chunked prefill "
                "or truncation through an image is not supported)"
            )
        token_grid = config.token_grid_size if token_grid is None else int(token_grid)
        if window_size == "config":
            window_size = config.vision_remember_window_size
        num_images = len(features)
        tiles_per_image = torch.tensor([f.shape[0] for f in features], device=device)
        tokens_per_image = torch.tensor([c.shape[0] for c in token_cells], device=device)
        image_of_token = torch.repeat_interleave(torch.arange(num_images, device=device), tokens_per_image)
        valid = cells[:, 0] >= 0
        image_index = image_of_token[valid]
        tile_offset = torch.cumsum(tiles_per_image, 0) - tiles_per_image
        token_tile = cells[valid, 0] + tile_offset[image_index]
        token_cell = cells[valid, 1] * token_grid + cells[valid, 2]
        # one image (the usual prefill): use its tensor as is, `cat` would copy every multi-level feature again
        features_cat = features[0] if num_images == 1 else torch.cat(features)
        num_tiles, cells_per_tile = features_cat.shape[:2]
        feature_grid = math.isqrt(cells_per_tile)
        window_size = window_size if interaction.reads_windows else None
        index, window_valid = feature_window_index(
            token_grid, feature_grid, window_size, device, config.vision_remember_window_layout
        )
        tile_image = torch.repeat_interleave(torch.arange(num_images, device=device), tiles_per_image)
        if group_by_tile:  # each tile (video frame) its own group
            image_index, tile_image, num_images = token_tile, torch.arange(num_tiles, device=device), num_tiles
        image_slot, max_image_tokens = group_slots(image_index, num_images)
        tile_slot, max_tile_tokens = group_slots(token_tile, num_tiles)
        cell_image = tile_image.repeat_interleave(cells_per_tile)
        cell_image_slot, max_image_cells = group_slots(cell_image, num_images)
        normalized = None
        if config.vision_remember_formulation != "plain":
            groups = len(config.vision_remember_feature_layers) if interaction.normalizes_per_level else 1
            normalized = normalize_features(features_cat, groups)
        return cls(
            positions=all_positions[valid],
            features=features_cat,
            normalized_features=normalized,
            saliency=saliency[0] if num_images == 1 else torch.cat(saliency),
            token_tile=token_tile,
            token_cell=token_cell,
            image_index=image_index,
            image_slot=image_slot,
            tile_slot=tile_slot,
            cell_image=cell_image,
            cell_image_slot=cell_image_slot,
            window_index=token_tile[:, None] * cells_per_tile + index[token_cell],
            window_valid=window_valid[token_cell],
            num_images=num_images,
            max_image_tokens=max_image_tokens,
            max_tile_tokens=max_tile_tokens,
            max_image_cells=max_image_cells,
            token_grid=token_grid,
            feature_grid=feature_grid,
            formulation=config.vision_remember_formulation,
        )


__all__ = ["FEATURE_NORM_EPS", "VisionRememberFeatures", "VisionRememberInputs", "group_slots", "normalize_features"]
