# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Image- and video-token counts for serving, all from the package's `anyres_layout` / `video_num_tokens` (the one
source of truth the Transformers model and processor use): per image in its prompt, per video, and the most one item
can take (vLLM sizes its encoder budget from it and refuses to start when one item would not fit in a step)."""

from functools import lru_cache

from ..packing_llava_vr import AnyResLayout, anyres_layout, images_use_anyres, video_num_tokens

# Frames of the longest video vLLM profiles and budgets for (vLLM's own default for a `video_url`: 32 frames); fewer
# when `max_model_len` holds fewer. A longer video is served while its tokens fit the encoder budget (vLLM answers a
# 400 naming the budget otherwise).
MAX_PROFILED_VIDEO_FRAMES = 32


def is_tiled(config, num_prompt_images: int) -> bool:
    """Whether an image is tiled with AnyRes in a prompt of `num_prompt_images` images (LLaVA-OneVision tiles only a
    lone image unless `multi_image_anyres`); `vision_aspect_ratio="pad"` never tiles (see `anyres_layout`)."""
    return images_use_anyres([num_prompt_images], num_prompt_images, config.multi_image_anyres)[0]


def image_layout(config, image_size, tiled: bool) -> AnyResLayout:
    """The layout `LlavaVRModel.image_layouts` gives an image of `image_size = (height, width)`: tiled with the
    config's AnyRes setting, or its base tile only (the layout `pad` gives)."""
    return anyres_layout(
        image_size,
        config.image_grid_pinpoints,
        config.vision_config.image_size,
        config.token_grid_size,
        config.vision_aspect_ratio if tiled else "pad",
    )


def max_image_tokens(config) -> int:
    """An upper bound on the tokens of one image (exact for `pad`): for every AnyRes crop grid, every unpadded canvas
    it can keep (full width and any height, or full height and any width), counted by `anyres_layout`."""
    pinpoints = tuple(sorted({(int(h), int(w)) for h, w in config.image_grid_pinpoints}))
    return _max_image_tokens(
        pinpoints, config.vision_config.image_size, config.token_grid_size, config.vision_aspect_ratio
    )


@lru_cache(maxsize=16)
def _max_image_tokens(pinpoints: tuple, tile: int, token_grid: int, vision_aspect_ratio: str) -> int:
    most = token_grid * token_grid + 1
    if vision_aspect_ratio == "pad":
        return most
    for height, width in pinpoints:
        rows, cols = height // tile * token_grid, width // tile * token_grid  # crop canvas in tokens
        # an image of (h, cols) token-pixels on this single pinpoint keeps a canvas h (or h + 1) rows high
        sizes = [(h, cols) for h in range(1, rows + 1)] + [(rows, w) for w in range(1, cols + 1)]
        for size in sizes:
            layout = anyres_layout(size, [[height, width]], tile, token_grid, vision_aspect_ratio)
            most = max(most, layout.num_tokens)
    return most


def image_size_with_most_tokens(config) -> tuple[int, int]:
    """`(height, width)` of the pinpoint-sized image with the most tokens (the dummy image vLLM profiles with)."""
    if config.vision_aspect_ratio == "pad":
        tile = config.vision_config.image_size
        return tile, tile
    return max(
        ((int(h), int(w)) for h, w in config.image_grid_pinpoints),
        key=lambda size: image_layout(config, size, True).num_tokens,
    )


def video_tokens(config, num_frames: int) -> int:
    """Tokens of one video of `num_frames` frames: `frames * ceil(g / spatial_pool_stride)**2 + 1`."""
    return video_num_tokens(num_frames, config.token_grid_size, config.spatial_pool_stride)


def max_video_frames(config, seq_len: int) -> int:
    """Frames of the longest video vLLM profiles: `MAX_PROFILED_VIDEO_FRAMES`, or as many as `seq_len` holds (>= 1)."""
    per_frame = config.num_video_tokens_per_frame
    return max(1, min(MAX_PROFILED_VIDEO_FRAMES, (seq_len - 1) // per_frame))


def supports_video(config) -> bool:
    """Whether the config can take videos: a video token distinct from the image token, inside the vocabulary (the
    config's default id, OneVision's 151647, lies outside a small model's vocabulary)."""
    video_token = getattr(config, "video_token_id", None)
    return (
        video_token is not None
        and video_token != config.image_token_id
        and 0 <= video_token < config.text_config.vocab_size
    )


__all__ = [
    "MAX_PROFILED_VIDEO_FRAMES",
    "image_layout",
    "image_size_with_most_tokens",
    "is_tiled",
    "max_image_tokens",
    "max_video_frames",
    "supports_video",
    "video_tokens",
]
