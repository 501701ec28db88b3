# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The package's own image half of LLaVA-VR, for serving: no second implementation of the tower, the projector, the
AnyRes packing, the saliency or Vision Remember.

`build_image_encoder` constructs the package's `LlavaVRModel` on the meta device, keeps its vision tower, projector,
`image_newline` and saliency hooks (a `LlavaVRModel` whose `get_image_features` runs exactly as in Transformers),
takes its `VisionRemember` modules out of the text model and drops the Transformers LLM, which vLLM replaces. Only
the kept parts are materialised. `encode_images` / `encode_videos` turn what the vLLM processor produced into one
row tensor per image / video (see `image_rows.py`); videos run the package's `get_video_features` (LLaVA-OneVision's
layout: frames through the tower, projector, per-frame pooling, one newline per video).
"""

import torch
from torch import nn

from ..modeling_llava_vr import LlavaVRModel
from ..packing_llava_vr import packed_token_cells, video_token_cells
from .image_rows import encode_image_rows


def build_image_encoder(config, device, dtype) -> tuple[LlavaVRModel, nn.ModuleDict]:
    """`(encoder, vision_remember)`: a `LlavaVRModel` without its `language_model`, and the VR `ModuleDict` (keys =
    decoder layer indices as strings). Weights are random until loaded; non-persistent buffers (position ids) are
    initialised here."""
    with torch.device("meta"):
        encoder = LlavaVRModel(config)
    vision_remember = encoder.language_model.vision_remember
    del encoder.language_model
    encoder.to_empty(device=device)
    vision_remember.to_empty(device=device)
    encoder.init_weights()  # buffers such as the tower's position ids; the checkpoint overwrites every weight
    return encoder.to(dtype).eval(), vision_remember.to(dtype).eval()


def encode_images(
    encoder: LlavaVRModel, pixel_values: torch.Tensor, image_sizes: torch.Tensor, num_tiles: torch.Tensor
) -> list[torch.Tensor]:
    """Encodes a batch of images into their vLLM rows, in order.

    Args:
        pixel_values: `(total_tiles, 3, T, T)`, each image's tiles (base tile first) one after the other.
        image_sizes: `(num_images, 2)` original `(height, width)`.
        num_tiles: `(num_images,)` tiles of each image: 1 for an image encoded by its base tile only (it shares its
            prompt with other images, or `vision_aspect_ratio="pad"`), else base + AnyRes crops.
    Returns:
        Per image `(tokens_i, D + HEADER_WIDTH + W_i)` (see `encode_image_rows`).
    """
    num_tiles = [int(n) for n in num_tiles]
    if len(num_tiles) != len(image_sizes) or sum(num_tiles) != pixel_values.shape[0]:
        raise ValueError(
            f"{pixel_values.shape[0]} tiles for images of {num_tiles} tiles and {len(image_sizes)} image sizes"
        )
    per_image = list(pixel_values.split(num_tiles))
    rows: list[torch.Tensor | None] = [None] * len(num_tiles)
    # tiled images use the config's AnyRes setting; base-tile-only images the same layout as `pad` gives
    for tiled, aspect_ratio in ((True, None), (False, "pad")):
        chosen = [i for i, n in enumerate(num_tiles) if (n > 1) == tiled]
        if not chosen:
            continue
        output = encoder.get_image_features(
            torch.cat([per_image[i] for i in chosen]),
            image_sizes[chosen],
            vision_aspect_ratio=aspect_ratio,
        )
        vision_remember = output.vision_remember_features
        if vision_remember is None:
            cells = [encoder_cells(encoder, image_sizes[i], num_tiles[i]) for i in chosen]
            features = saliency = [None] * len(chosen)
        else:
            features, saliency, cells = vision_remember.features, vision_remember.saliency, vision_remember.token_cells
        for j, i in enumerate(chosen):
            rows[i] = encode_image_rows(output.pooler_output[j], cells[j], features[j], saliency[j])
    return rows


def encode_videos(encoder: LlavaVRModel, pixel_values_videos: torch.Tensor, num_frames: torch.Tensor) -> list:
    """Encodes a batch of videos into their vLLM rows, in order.

    Args:
        pixel_values_videos: `(total_frames, 3, T, T)`, each video's frames one after the other.
        num_frames: `(num_videos,)` frames of each video.
    Returns:
        Per video `(frames_v * gv**2 + 1, D + HEADER_WIDTH + W_v)` (see `encode_image_rows`; `W_v = 0` without VR on
        video).
    """
    num_frames = [int(n) for n in num_frames]
    if sum(num_frames) != pixel_values_videos.shape[0] or min(num_frames, default=1) < 1:
        raise ValueError(f"{pixel_values_videos.shape[0]} frames for videos of {num_frames} frames")
    # every frame of every video through the tower in one batch (the model's flattened input)
    output = encoder.get_video_features(pixel_values_videos, video_num_frames=num_frames)
    vision_remember = output.vision_remember_features
    grid = encoder.config.video_token_grid_size
    rows = []
    for i, frames in enumerate(num_frames):
        if vision_remember is None:
            cells = video_token_cells(frames, grid, pixel_values_videos.device)
            features = saliency = None
        else:
            cells = vision_remember.token_cells[i]
            features, saliency = vision_remember.features[i], vision_remember.saliency[i]
        rows.append(encode_image_rows(output.pooler_output[i], cells, features, saliency, video=True))
    return rows


def encoder_cells(encoder: LlavaVRModel, image_size: torch.Tensor, num_tiles: int) -> torch.Tensor:
    """Token cells of an image for a model without Vision Remember (its features carry none)."""
    aspect_ratio = None if num_tiles > 1 else "pad"
    layout = encoder.image_layouts(image_size[None], None, aspect_ratio)[0]
    return packed_token_cells(layout, image_size.device)


__all__ = ["build_image_encoder", "encode_images", "encode_videos"]
