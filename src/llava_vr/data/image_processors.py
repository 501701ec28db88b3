# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Transformers' AnyRes image processors (PIL back ends: no torchvision) for a given tile size and pinpoints."""

from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil

from ..packing_llava_vr import grid_pinpoints

IMAGE_PROCESSOR_KINDS = {"next": LlavaNextImageProcessorPil, "onevision": LlavaOnevisionImageProcessorPil}


def anyres_image_processor(kind: str = "next", tile: int = 336, pinpoints=None, **kwargs):
    """LLaVA-NeXT (`"next"`: resize the shortest edge, centre-crop) or LLaVA-OneVision (`"onevision"`: resize to the
    tile) image processor for `tile`-px tiles; `pinpoints` defaults to `grid_pinpoints(tile, 6, 6)`. Extra kwargs
    (`image_mean`, `image_std`, ...) are passed through."""
    if kind not in IMAGE_PROCESSOR_KINDS:
        raise ValueError(f"image processor kind {kind!r} is not one of {sorted(IMAGE_PROCESSOR_KINDS)}")
    size = {"shortest_edge": tile} if kind == "next" else {"height": tile, "width": tile}
    return IMAGE_PROCESSOR_KINDS[kind](
        size=size,
        crop_size={"height": tile, "width": tile},
        image_grid_pinpoints=pinpoints or grid_pinpoints(tile, 6, 6),
        **kwargs,
    )


__all__ = ["IMAGE_PROCESSOR_KINDS", "anyres_image_processor"]
