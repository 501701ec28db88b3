# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Token-cell -> feature-window index tables, shared by SELA (Vision Remember) and the TokenPacker projector.

A token grid of side `g` over a feature grid of side `G`: token cell `(i, j)` reads feature rows
`[floor(i*G/g), ceil((i+1)*G/g))` and the same for columns — the regions of 2D adaptive average pooling, so grids that
`g` does not divide (SigLIP-384: 27 features, 13 or 14 tokens) get adaptive windows instead of an error.

A `window_size` `s` larger than a region, in one of the layouts of `registries_llava_vr.WINDOW_LAYOUTS`:
- `partition` (the paper, §4.2: "following Swin Transformer, we divide the vision features into local regions of size
  [s×s] … For vision tokens, we perform the same operation, but the size of the local region is [(s/2)×(s/2)]"): the
  feature grid is cut into aligned, non-overlapping `s x s` windows (the last one clipped at the border) and every
  token reads the window holding its own region, so the tokens of one aligned block share one window. Needs `G`
  divisible by `g` and `s` a multiple of the region side `G/g`.
- `centred` (an ablation, and the layout for windows `partition` refuses): every token reads its own `s x s` window
  centred on its region, overlapping its neighbours', clipped at the border.
For `s` equal to the region side both layouts are the region itself.
"""

from functools import lru_cache

import torch

from .registries_llava_vr import WINDOW_LAYOUTS, check_implemented


def check_window(token_grid: int, feature_grid: int, window_size: int | None, layout: str) -> None:
    """Raises `ValueError` when `window_size` cannot be laid out as `layout` over these grids."""
    if layout not in WINDOW_LAYOUTS:
        raise ValueError(f"vision_remember_window_layout={layout!r}: expected one of {tuple(WINDOW_LAYOUTS)}")
    if window_size is None:
        return
    if window_size < 1 or window_size > feature_grid:
        raise ValueError(f"vision_remember_window_size={window_size} must be in 1..{feature_grid} (the feature grid)")
    if layout == "partition":
        region = feature_grid // token_grid
        if feature_grid % token_grid or window_size % region:
            raise ValueError(
                f"vision_remember_window_size={window_size} with the 'partition' layout needs the {feature_grid}-cell "
                f"feature grid divisible by the {token_grid}-token grid and the window a multiple of its region side "
                f"{feature_grid / token_grid:g}; use vision_remember_window_layout='centred' (or window size None)"
            )


def _partition_window(start: torch.Tensor, end: torch.Tensor, window_size: int, in_size: int):
    """`partition`: the aligned `window_size` block holding the region `[start, end)`, clipped at `in_size`."""
    start = (start // window_size) * window_size
    return start, torch.clamp(start + window_size, max=in_size)


def _centred_window(start: torch.Tensor, end: torch.Tensor, window_size: int, in_size: int):
    """`centred`: a `window_size` window centred on the region `[start, end)` where the region is narrower, clipped
    to `[0, in_size)`."""
    wide = (end - start) < window_size
    centred_start = (start + end - window_size) // 2
    start = torch.where(wide, centred_start, start)
    end = torch.where(wide, centred_start + window_size, end)
    return start.clamp(min=0), end.clamp(max=in_size)


WINDOW_BOUNDS = {"partition": _partition_window, "centred": _centred_window}
"""Window layout -> `(region start, region end, window_size, in_size) -> (window start, window end)`, per index."""
check_implemented(WINDOW_LAYOUTS, WINDOW_BOUNDS, "vision_remember_window_layout")


def _window_bounds(out_size: int, in_size: int, window_size: int | None, layout: str):
    """Per output index: `(start, length)` of its input window, `(out_size,)` each."""
    i = torch.arange(out_size)
    start = (i * in_size) // out_size
    end = -((-(i + 1) * in_size) // out_size)  # ceil
    if window_size is not None:
        start, end = WINDOW_BOUNDS[layout](start, end, window_size, in_size)
    return start, end - start


@lru_cache(maxsize=64)
@torch.inference_mode(False)  # cached across calls: an inference tensor here would break later training
def _window_table(token_grid: int, feature_grid: int, window_size: int | None, layout: str):
    row_start, row_len = _window_bounds(token_grid, feature_grid, window_size, layout)
    col_start, col_len = row_start, row_len
    max_rows, max_cols = int(row_len.max()), int(col_len.max())
    dr, dc = torch.meshgrid(torch.arange(max_rows), torch.arange(max_cols), indexing="ij")
    dr, dc = dr.reshape(-1), dc.reshape(-1)  # (L,)
    rows = row_start[:, None, None] + dr  # (g, 1, L)
    cols = col_start[None, :, None] + dc  # (1, g, L)
    valid = (dr < row_len[:, None, None]) & (dc < col_len[None, :, None])  # (g, g, L)
    index = (rows.clamp(max=feature_grid - 1) * feature_grid + cols.clamp(max=feature_grid - 1)).expand_as(valid)
    return index.reshape(token_grid * token_grid, -1).contiguous(), valid.reshape(token_grid * token_grid, -1)


def feature_window_index(
    token_grid: int, feature_grid: int, window_size: int | None = None, device=None, layout: str = "partition"
):
    """Window of every token cell in its tile's flattened feature grid.

    Returns:
        index: `(g*g, L)` long, cell `(i, j)` at row `i*g + j`, entries in `[0, G*G)`.
        valid: `(g*g, L)` bool, `False` for padding where a cell's window is smaller than the largest one.
    """
    check_window(int(token_grid), int(feature_grid), window_size, layout)
    index, valid = _window_table(int(token_grid), int(feature_grid), window_size, layout)
    return index.to(device), valid.to(device)


__all__ = ["WINDOW_BOUNDS", "check_window", "feature_window_index"]
