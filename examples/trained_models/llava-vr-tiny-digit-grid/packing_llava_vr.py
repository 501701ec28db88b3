# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""AnyRes packing of per-tile vision tokens, and video frames' pooling: the one source of truth for image- and
video-token counts.

The model packs its projected tiles with `pack_tile_tokens`, the processor counts placeholders with
`anyres_layout(...).num_tokens`, and Vision Remember locates every packed token in its tile with
`packed_token_cells`, which runs the packing itself on a coordinate map. All three read the same `AnyResLayout`.

Videos (LLaVA-OneVision's layout): every frame is a base tile; its `g x g` projected tokens are bilinearly pooled to
`ceil(g / stride)` per side (`pool_frame_tokens`), the frames' tokens follow each other and one newline ends the
video: `video_num_tokens(frames, g, stride) = frames * ceil(g / stride)**2 + 1`; `video_token_cells` places them.
"""

import math
from dataclasses import dataclass

import torch
from transformers.image_processing_utils import select_best_resolution

VIDEO_POOL_STRIDES = (1, 2, 3, 4)
"""Allowed `spatial_pool_stride` values (2 = LLaVA-OneVision's 2x2 bilinear pooling of each frame)."""


def grid_pinpoints(tile: int, rows: int, cols: int) -> list[list[int]]:
    """AnyRes resolutions `[[tile*h, tile*w] for h in 1..rows for w in 1..cols]` (`(6, 6)` for the released models)."""
    return [[tile * h, tile * w] for h in range(1, rows + 1) for w in range(1, cols + 1)]


@dataclass(frozen=True)
class AnyResLayout:
    """How one image's tiles become its vision tokens.

    Attributes:
        num_tiles: tiles encoded by the tower: the base (whole-image) tile, then `crop_rows * crop_cols` crops
            in row-major order; 1 when the image is not tiled.
        crop_rows, crop_cols: AnyRes crop grid (0 when not tiled).
        token_grid: token grid side of one tile after the projector (24 for `mlp` on CLIP-336, 12 pooled).
        unpadded_box: `(top, bottom, left, right)` of the crop-token canvas `(crop_rows*g, crop_cols*g)` kept by
            unpadding (Transformers' `unpad_image` arithmetic, `round(x, 7)`).
        packed_hw: `(height, width)` of the crop canvas after the `anyres_max_N` down-interpolation.
        num_tokens: `g*g` base tokens + `height * (width + 1)` crop tokens with one newline per row, or
            `g*g + 1` (base + newline) when not tiled.
    """

    num_tiles: int
    crop_rows: int
    crop_cols: int
    token_grid: int
    unpadded_box: tuple[int, int, int, int]
    packed_hw: tuple[int, int]
    num_tokens: int

    @property
    def interpolated(self) -> bool:
        top, bottom, left, right = self.unpadded_box
        return self.packed_hw != (bottom - top, right - left)


def max_tiles_from_aspect_ratio(vision_aspect_ratio: str | None) -> int | None:
    """`"anyres_max_9"` -> 9, `"anyres"`/`"pad"`/`None` -> `None` (no cap)."""
    if vision_aspect_ratio is None or vision_aspect_ratio in ("anyres", "pad"):
        return None
    if not vision_aspect_ratio.startswith("anyres_max_"):
        raise ValueError(f"vision_aspect_ratio={vision_aspect_ratio!r}: expected 'anyres', 'anyres_max_N' or 'pad'")
    return int(vision_aspect_ratio.removeprefix("anyres_max_"))


def images_use_anyres(batch_num_images, num_images: int, multi_image_anyres: bool) -> list[bool]:
    """Per image: tiled with AnyRes? LLaVA-OneVision tiles only images alone in their prompt."""
    if multi_image_anyres or batch_num_images is None:
        return [True] * num_images
    return [int(n) == 1 for n in batch_num_images for _ in range(int(n))]


def anyres_layout(
    image_size,
    grid_pinpoints: list,
    tile_size: int,
    token_grid: int,
    vision_aspect_ratio: str | None = "anyres",
    use_anyres: bool = True,
) -> AnyResLayout:
    """Layout of one image of `image_size = (height, width)` pixels (see `AnyResLayout`).

    `vision_aspect_ratio="pad"` (no AnyRes, e.g. the paper's stage 1) or `use_anyres=False` (an image sharing its
    prompt, LLaVA-OneVision) encode the base tile only: `g*g` tokens + one newline.
    """
    g = int(token_grid)
    if not use_anyres or vision_aspect_ratio == "pad":
        return AnyResLayout(1, 0, 0, g, (0, 0, 0, 0), (0, 0), g * g + 1)
    height, width = (int(x) for x in (image_size.tolist() if hasattr(image_size, "tolist") else image_size))
    if height < 1 or width < 1:
        raise ValueError(f"image size {(height, width)} is empty")
    best_height, best_width = select_best_resolution((height, width), grid_pinpoints)
    crop_rows, crop_cols = best_height // tile_size, best_width // tile_size
    canvas_h, canvas_w = crop_rows * g, crop_cols * g
    top, bottom, left, right = 0, canvas_h, 0, canvas_w
    if width / height > canvas_w / canvas_h:
        new_height = int(round(height * (canvas_w / width), 7))
        padding = (canvas_h - new_height) // 2
        top, bottom = padding, canvas_h - padding
    else:
        new_width = int(round(width * (canvas_h / height), 7))
        padding = (canvas_w - new_width) // 2
        left, right = padding, canvas_w - padding
    packed_h, packed_w = bottom - top, right - left
    max_tiles = max_tiles_from_aspect_ratio(vision_aspect_ratio)
    if max_tiles is not None:
        ratio = math.sqrt(packed_h * packed_w / (max_tiles * g**2))
        if ratio > 1.1:
            packed_h, packed_w = int(packed_h // ratio), int(packed_w // ratio)
    num_tokens = g * g + packed_h * (packed_w + 1)
    return AnyResLayout(
        1 + crop_rows * crop_cols, crop_rows, crop_cols, g, (top, bottom, left, right), (packed_h, packed_w), num_tokens
    )


def pack_tile_tokens(tile_tokens: torch.Tensor, layout: AnyResLayout, newline: torch.Tensor | None) -> torch.Tensor:
    """Packs one image's projected tiles into its token sequence (LLaVA-NeXT/OneVision order).

    Args:
        tile_tokens: `(num_tiles, g*g, dim)`, base tile first.
        layout: the image's `AnyResLayout`.
        newline: `(dim,)` appended after every crop-token row (and after the base tile when not tiled).
    Returns:
        `(layout.num_tokens, dim)`.
    """
    if tile_tokens.shape[0] != layout.num_tiles or tile_tokens.shape[1] != layout.token_grid**2:
        raise ValueError(
            f"got {tuple(tile_tokens.shape[:2])} tiles x tokens for an image laid out as {layout.num_tiles} tiles of "
            f"{layout.token_grid}x{layout.token_grid} tokens: pixel_values and image_sizes do not belong together"
        )
    base, dim = tile_tokens[0], tile_tokens.shape[-1]
    if layout.num_tiles == 1:
        parts = [base] if newline is None else [base, newline[None].to(base)]
        return torch.cat(parts, dim=0)
    g = layout.token_grid
    canvas = tile_tokens[1:].view(layout.crop_rows, layout.crop_cols, g, g, dim)
    canvas = canvas.permute(4, 0, 2, 1, 3).reshape(dim, layout.crop_rows * g, layout.crop_cols * g)
    top, bottom, left, right = layout.unpadded_box
    canvas = canvas[:, top:bottom, left:right]
    if layout.interpolated:
        canvas = torch.nn.functional.interpolate(canvas[None], list(layout.packed_hw), mode="bilinear")[0]
    if newline is not None:
        newline_column = newline[:, None, None].expand(dim, canvas.shape[1], 1).to(canvas)
        canvas = torch.cat((canvas, newline_column), dim=-1)
    return torch.cat((base, canvas.flatten(1, 2).transpose(0, 1)), dim=0)


def packed_token_cells(layout: AnyResLayout, device=None) -> torch.Tensor:
    """Where each packed token sits: `(num_tokens, 3)` long rows `(tile, row, col)` in the tile's token grid,
    `(-1, -1, -1)` for newline tokens. Down-interpolated tokens map to their nearest source cell.

    Computed by packing a coordinate map with `pack_tile_tokens`, so it follows the packing exactly.
    """
    g = layout.token_grid
    rows, cols = torch.meshgrid(
        torch.arange(g, dtype=torch.float64), torch.arange(g, dtype=torch.float64), indexing="ij"
    )
    base = torch.stack((torch.zeros_like(rows), rows, cols), dim=-1).view(1, g * g, 3)
    coords = [base]
    if layout.num_tiles > 1:
        # crops carry (1, canvas row, canvas col): linear ramps survive bilinear interpolation
        tile_r, tile_c, r, c = torch.meshgrid(
            *(torch.arange(n, dtype=torch.float64) for n in (layout.crop_rows, layout.crop_cols, g, g)), indexing="ij"
        )
        crops = torch.stack((torch.ones_like(r), tile_r * g + r, tile_c * g + c), dim=-1)
        coords.append(crops.reshape(layout.num_tiles - 1, g * g, 3))
    packed = pack_tile_tokens(torch.cat(coords), layout, torch.full((3,), -1.0, dtype=torch.float64))
    kind, y, x = packed.round().long().unbind(-1)
    is_crop = kind == 1
    tile = torch.where(is_crop, 1 + (y // g) * max(layout.crop_cols, 1) + x // g, kind)
    cells = torch.stack((tile, torch.where(is_crop, y % g, y), torch.where(is_crop, x % g, x)), dim=-1)
    cells[kind < 0] = -1
    return cells.to(device)


def video_token_grid(token_grid: int, stride: int) -> int:
    """Side of a video frame's token grid: the projector's `token_grid` pooled by `stride`, `ceil(g / stride)`."""
    return math.ceil(int(token_grid) / int(stride))


def video_num_tokens(num_frames: int, token_grid: int, stride: int) -> int:
    """Tokens of one video: `num_frames * ceil(g / stride)**2` frame tokens + one newline (LLaVA-OneVision)."""
    return int(num_frames) * video_token_grid(token_grid, stride) ** 2 + 1


def pool_frame_tokens(frame_tokens: torch.Tensor, stride: int) -> torch.Tensor:
    """LLaVA-OneVision's `apply_pooling` with a stride: `(frames, g*g, dim) -> (frames, ceil(g/s)**2, dim)` by
    bilinear interpolation of each frame's token grid (identity for stride 1)."""
    frames, cells, dim = frame_tokens.shape
    g = math.isqrt(cells)
    if g * g != cells:
        raise ValueError(f"video frames give {cells} tokens each, not a square token grid")
    pooled = video_token_grid(g, stride)
    if pooled == g:
        return frame_tokens
    grid = frame_tokens.view(frames, g, g, dim).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=[pooled, pooled], mode="bilinear")
    return grid.permute(0, 2, 3, 1).reshape(frames, pooled * pooled, dim)


def video_token_cells(num_frames: int, video_grid: int, device=None) -> torch.Tensor:
    """Where each token of one video sits: `(video_num_tokens, 3)` long rows `(frame, row, col)` in the frame's
    `video_grid x video_grid` token grid, frames in order, then `(-1, -1, -1)` for the closing newline."""
    frame, row, col = torch.meshgrid(
        torch.arange(num_frames, device=device),
        torch.arange(video_grid, device=device),
        torch.arange(video_grid, device=device),
        indexing="ij",
    )
    cells = torch.stack((frame, row, col), dim=-1).view(-1, 3)
    return torch.cat((cells, cells.new_full((1, 3), -1)))


__all__ = [
    "VIDEO_POOL_STRIDES",
    "AnyResLayout",
    "anyres_layout",
    "images_use_anyres",
    "max_tiles_from_aspect_ratio",
    "pack_tile_tokens",
    "packed_token_cells",
    "pool_frame_tokens",
    "video_num_tokens",
    "video_token_cells",
    "video_token_grid",
]
