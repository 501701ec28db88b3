# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""One image's (or video's) encoder output as vLLM carries it: one row per placeholder token, `(tokens, width)`.

vLLM caches what a model's `embed_multimodal` returns per image and hands the decoder step slices of its rows, in
prompt order, next to an `is_multimodal` mask. Vision Remember needs more than the token embeddings: the image's
multi-level tower features, their saliency, and where every token sits in its tile. So each row carries, after the
`D` embedding channels, a small header and a slice of the image's features:

    [ embedding (D) | header (HEADER_WIDTH) | chunk of flat(features, saliency), zero-padded ]

Header (integers, base-256 digits so that they are exact in bf16/fp16): the row's index in the image, the image's
token count, its tile count, the row's token cell `(tile, row, col)` (+1, so 0 = newline token), and whether the item
is a video (its tiles are its frames, its cells on the pooled frame grid: VR reads it with the video settings). A slice
of rows therefore says by itself whether it holds the whole item (VR needs all of it in one forward) and rebuilds the
package's `VisionRememberInputs` ingredients exactly.
"""

import torch

# (name, base-256 digits): row index, tokens in the image, tiles, token tile + 1, token row + 1, token col + 1
# video: 1 for a video's rows, 0 for an image's
_HEADER_FIELDS = (
    ("row", 3),
    ("tokens", 3),
    ("tiles", 2),
    ("tile", 2),
    ("cell_row", 2),
    ("cell_col", 2),
    ("video", 1),
)
HEADER_WIDTH = sum(digits for _, digits in _HEADER_FIELDS)
_MAX_VALUE = {name: 256**digits - 1 for name, digits in _HEADER_FIELDS}


def _to_digits(values: torch.Tensor, digits: int) -> torch.Tensor:
    """`(N,)` non-negative integers -> `(N, digits)` base-256 digits, least significant first."""
    powers = 256 ** torch.arange(digits, device=values.device)
    return (values[:, None] // powers) % 256


def _from_digits(columns: torch.Tensor) -> torch.Tensor:
    """`(N, digits)` base-256 digits (any float dtype) -> `(N,)` long."""
    powers = 256 ** torch.arange(columns.shape[1], device=columns.device)
    return (columns.round().long() * powers).sum(-1)


def _header(num_tokens: int, num_tiles: int, cells: torch.Tensor, video: bool) -> torch.Tensor:
    """`(tokens, HEADER_WIDTH)` long."""
    device = cells.device
    fields = {
        "row": torch.arange(num_tokens, device=device),
        "tokens": torch.full((num_tokens,), num_tokens, device=device),
        "tiles": torch.full((num_tokens,), num_tiles, device=device),
        "tile": cells[:, 0] + 1,
        "cell_row": cells[:, 1] + 1,
        "cell_col": cells[:, 2] + 1,
        "video": torch.full((num_tokens,), int(video), device=device),
    }
    for name, values in fields.items():
        if int(values.max()) > _MAX_VALUE[name]:
            raise ValueError(f"an image with {name} = {int(values.max())} does not fit the serving row header")
    return torch.cat([_to_digits(fields[name], digits) for name, digits in _HEADER_FIELDS], dim=1)


def encode_image_rows(
    embeddings: torch.Tensor,
    cells: torch.Tensor,
    features: torch.Tensor | None = None,
    saliency: torch.Tensor | None = None,
    video: bool = False,
) -> torch.Tensor:
    """Packs one image (or video) into its encoder-output rows.

    Args:
        embeddings: `(tokens, D)` packed vision tokens (what is scattered into the prompt).
        cells: `(tokens, 3)` long `(tile, row, col)`, `-1` rows for newline tokens (`packed_token_cells`).
        features: `(tiles, G*G, C_ml)` multi-level features, `None` for a model without Vision Remember.
        saliency: `(tiles, G*G)`, with `features`.
        video: the rows are a video's (tiles = frames, cells on the pooled frame grid, `video_token_cells`).
    Returns:
        `(tokens, D + HEADER_WIDTH + W)` in `embeddings.dtype`, `W = ceil(tiles*G*G*(C_ml+1) / tokens)` (0 without VR).
    """
    num_tokens = embeddings.shape[0]
    if cells.shape != (num_tokens, 3):
        raise ValueError(f"token cells of shape {tuple(cells.shape)} for {num_tokens} image tokens")
    num_tiles = 0 if features is None else features.shape[0]
    parts = [embeddings, _header(num_tokens, num_tiles, cells.to(embeddings.device), video).to(embeddings.dtype)]
    if features is not None:
        flat = torch.cat((features.reshape(-1), saliency.reshape(-1))).to(embeddings.dtype)
        width = -(-flat.numel() // num_tokens)
        chunks = flat.new_zeros(num_tokens * width)
        chunks[: flat.numel()] = flat
        parts.append(chunks.view(num_tokens, width))
    return torch.cat(parts, dim=1)


def decode_image_rows(rows: torch.Tensor, hidden_size: int, cells_per_tile: int, feature_channels: int):
    """Inverse of `encode_image_rows` for one image's rows, as vLLM hands them to a step.

    Returns `(embeddings, cells, features, saliency, whole)`: `whole` is False when the rows are only part of the
    image (then `features`/`saliency` are `None`); `features`/`saliency` are also `None` for an image encoded without
    Vision Remember inputs.
    """
    embeddings = rows[:, :hidden_size]
    columns = rows[:, hidden_size : hidden_size + HEADER_WIDTH]
    fields, start = {}, 0
    for name, digits in _HEADER_FIELDS:
        fields[name] = _from_digits(columns[:, start : start + digits])
        start += digits
    cells = torch.stack((fields["tile"], fields["cell_row"], fields["cell_col"]), dim=1) - 1
    num_tokens, num_tiles = int(fields["tokens"][0]), int(fields["tiles"][0])
    whole = rows.shape[0] == num_tokens and int(fields["row"][0]) == 0
    if not whole or num_tiles == 0:
        return embeddings, cells, None, None, whole
    flat = rows[:, hidden_size + HEADER_WIDTH :].reshape(-1)
    num_features = num_tiles * cells_per_tile * feature_channels
    features = flat[:num_features].view(num_tiles, cells_per_tile, feature_channels)
    saliency = flat[num_features : num_features + num_tiles * cells_per_tile].view(num_tiles, cells_per_tile)
    return embeddings, cells, features, saliency, whole


def rows_are_video(rows: torch.Tensor, hidden_size: int) -> bool:
    """Whether the rows (any slice of one item's) are a video's."""
    start = hidden_size + HEADER_WIDTH - dict(_HEADER_FIELDS)["video"]
    return bool(_from_digits(rows[:1, start : hidden_size + HEADER_WIDTH])[0])


def describe_rows(rows: torch.Tensor, hidden_size: int) -> str:
    """`'rows a..b of N'` for error messages."""
    columns = rows[:, hidden_size : hidden_size + HEADER_WIDTH]
    first = int(_from_digits(columns[:1, :3])[0])
    total = int(_from_digits(columns[:1, 3:6])[0])
    return f"rows {first}..{first + rows.shape[0] - 1} of its {total}"


__all__ = ["HEADER_WIDTH", "decode_image_rows", "describe_rows", "encode_image_rows", "rows_are_video"]
