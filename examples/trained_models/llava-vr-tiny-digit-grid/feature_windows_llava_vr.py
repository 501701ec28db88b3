# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Token-cell -> feature-window index tables, shared by SELA (Vision Remember) and the TokenPacker projector.

A token grid of side `g` over a feature grid of side `G`: token cell `(i, j)` reads feature rows
`[floor(i*G/g), ceil((i+1)*G/g))` and the same for columns — the regions of 2D adaptive average pooling, so grids that
`g` does not divide (SigLIP-384: 27 features, 13 or 14 tokens) get adaptive windows instead of an error. A
`window_size` larger than a region widens it symmetrically, clipped at the border.
"""

from functools import lru_cache

import torch


def _window_bounds(out_size: int, in_size: int, window_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output index: `(start, length)` of its input window, `(out_size,)` each."""
    i = torch.arange(out_size)
    start = (i * in_size) // out_size
    end = -((-(i + 1) * in_size) // out_size)  # ceil
    if window_size is not None:
        wide = (end - start) < window_size
        centred_start = (start + end - window_size) // 2
        start = torch.where(wide, centred_start, start)
        end = torch.where(wide, centred_start + window_size, end)
        start, end = start.clamp(min=0), end.clamp(max=in_size)
    return start, end - start


@lru_cache(maxsize=64)
@torch.inference_mode(False)  # cached across calls: an inference tensor here would break later training
def _window_table(token_grid: int, feature_grid: int, window_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    row_start, row_len = _window_bounds(token_grid, feature_grid, window_size)
    col_start, col_len = _window_bounds(token_grid, feature_grid, window_size)
    max_rows, max_cols = int(row_len.max()), int(col_len.max())
    dr, dc = torch.meshgrid(torch.arange(max_rows), torch.arange(max_cols), indexing="ij")
    dr, dc = dr.reshape(-1), dc.reshape(-1)  # (L,)
    rows = row_start[:, None, None] + dr  # (g, 1, L)
    cols = col_start[None, :, None] + dc  # (1, g, L)
    valid = (dr < row_len[:, None, None]) & (dc < col_len[None, :, None])  # (g, g, L)
    index = (rows.clamp(max=feature_grid - 1) * feature_grid + cols.clamp(max=feature_grid - 1)).expand_as(valid)
    return index.reshape(token_grid * token_grid, -1).contiguous(), valid.reshape(token_grid * token_grid, -1)


def feature_window_index(token_grid: int, feature_grid: int, window_size: int | None = None, device=None):
    """Window of every token cell in its tile's flattened feature grid.

    Returns:
        index: `(g*g, L)` long, cell `(i, j)` at row `i*g + j`, entries in `[0, G*G)`.
        valid: `(g*g, L)` bool, `False` for padding where a cell's window is smaller than the largest one.
    """
    index, valid = _window_table(int(token_grid), int(feature_grid), window_size)
    return index.to(device), valid.to(device)


__all__ = ["feature_window_index"]
