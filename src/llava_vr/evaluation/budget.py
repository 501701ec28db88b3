# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The image-token budget per tile, chosen when a checkpoint is loaded.

One checkpoint is evaluated at several budgets: `projector_pooled_grid_size=g` (a `from_pretrained` keyword that
Transformers hands to the config) makes the projector produce `g*g` tokens per tile; Vision Remember's windows follow
(a token's `sela` window is its cell region, `patch_grid / g`, unless the config pins `vision_remember_window_size`),
and the processor must count the same tokens (`processor.num_image_tokens = config.num_image_tokens_per_tile`). A
budget the projector cannot produce is refused (`projectors_llava_vr.check_token_budget`).
"""

from __future__ import annotations

import math


def budget_grid(tokens_per_tile=None, projector_pooled_grid_size=None) -> int | None:
    """The token-grid side `g` of a budget given as tokens per tile (a perfect square, `64` -> 8) or as the grid side
    itself; `None` when neither is given (the checkpoint's own budget). Raises `ValueError` on a non-square count or
    when both disagree."""
    grid = None if projector_pooled_grid_size in (None, "") else int(projector_pooled_grid_size)
    if tokens_per_tile not in (None, ""):
        tokens = int(tokens_per_tile)
        side = math.isqrt(max(tokens, 0))
        if tokens < 1 or side * side != tokens:
            raise ValueError(
                f"tokens_per_tile={tokens_per_tile}: a budget is a square token grid per tile (g * g: 144, 64, 36, ...)"
            )
        if grid is not None and grid != side:
            raise ValueError(f"tokens_per_tile={tokens} and projector_pooled_grid_size={grid} disagree")
        grid = side
    return grid


def load_model_and_processor(pretrained, grid: int | None = None, dtype="float32", device="cpu", **kwargs):
    """`(model, processor)` of a LLaVA-VR checkpoint at token budget `g*g` per tile (`grid=None`: its own budget).
    The processor counts the tokens the model scatters (`num_image_tokens = config.num_image_tokens_per_tile`)."""
    import torch

    from llava_vr import LlavaVRForConditionalGeneration, LlavaVRProcessor

    overrides = {} if grid is None else {"projector_pooled_grid_size": grid}
    model = LlavaVRForConditionalGeneration.from_pretrained(
        pretrained, dtype=getattr(torch, dtype) if isinstance(dtype, str) else dtype, **overrides, **kwargs
    )
    processor = LlavaVRProcessor.from_pretrained(pretrained)
    processor.num_image_tokens = model.config.num_image_tokens_per_tile
    return model.to(device).eval(), processor


__all__ = ["budget_grid", "load_model_and_processor"]
