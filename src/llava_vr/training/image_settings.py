# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Stage 1 without AnyRes: `vision_aspect_ratio="pad"` on both the model config and the processor, so each image
becomes its base tile only (`g*g` tokens + one newline), which the model and the processor count with the same
`anyres_layout`."""

from __future__ import annotations

import contextlib

from .components import llava_vr_config


def image_settings(model, processor=None) -> dict:
    """The settings that decide how many tokens an image becomes, on the model config and on the processor."""
    config = llava_vr_config(model)
    state = {"config.vision_aspect_ratio": config.vision_aspect_ratio}
    if processor is not None:
        if hasattr(processor, "vision_aspect_ratio"):
            state["processor.vision_aspect_ratio"] = processor.vision_aspect_ratio
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is not None and hasattr(image_processor, "image_grid_pinpoints"):
            state["image_processor.image_grid_pinpoints"] = image_processor.image_grid_pinpoints
    return state


def restore_image_settings(model, processor, state: dict) -> None:
    """Puts back what `image_settings` recorded (e.g. after a stage-1 run, before saving)."""
    config = llava_vr_config(model)
    config.vision_aspect_ratio = state["config.vision_aspect_ratio"]
    if "processor.vision_aspect_ratio" in state:
        processor.vision_aspect_ratio = state["processor.vision_aspect_ratio"]
    if "image_processor.image_grid_pinpoints" in state:
        processor.image_processor.image_grid_pinpoints = state["image_processor.image_grid_pinpoints"]


def set_base_tile_only(model, processor) -> dict:
    """Stage 1's "no AnyRes": every image becomes its base tile only (`g*g` tokens + one newline).

    Sets `vision_aspect_ratio="pad"` on the model config and on the processor (so both count `g*g + 1` tokens per
    image), and gives the image processor the single pinpoint `[[tile, tile]]` so it stops cutting AnyRes crops the
    model would not read (it still emits one crop after the base tile; the model takes the base tile of each image's
    `pixel_values`). Returns the previous settings for `restore_image_settings`.
    """
    state = image_settings(model, processor)
    config = llava_vr_config(model)
    config.vision_aspect_ratio = "pad"
    if processor is not None:
        if not hasattr(processor, "vision_aspect_ratio"):
            raise ValueError(f"{type(processor).__name__} has no vision_aspect_ratio: cannot switch AnyRes off")
        processor.vision_aspect_ratio = "pad"
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is not None and hasattr(image_processor, "image_grid_pinpoints"):
            tile = config.vision_config.image_size
            image_processor.image_grid_pinpoints = [[tile, tile]]
    return state


@contextlib.contextmanager
def base_tile_only(model, processor):
    """`set_base_tile_only` within the block, the previous settings restored after it."""
    state = set_base_tile_only(model, processor)
    try:
        yield
    finally:
        restore_image_settings(model, processor, state)


__all__ = ["base_tile_only", "image_settings", "restore_image_settings", "set_base_tile_only"]
