# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""vLLM schedulers that never let a prefix-cache hit end inside an image.

Prefix-cache hits are block-granular: when two prompts share an image but differ right after it, the hit can end
inside the image, and the next step would compute only the image's uncached rows; Vision Remember (bidirectional over
all of an image's tokens) would then see part of the image. The hit is cut back to the last block boundary before
such an image (repeatedly, in case that boundary falls inside an earlier image). Hits that cover whole images are
kept. `llava_vr_scheduler` builds the synchronous or the async variant, whichever vLLM resolved.
"""

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler


def hit_end_outside_images(num_computed_tokens: int, image_ranges: list[tuple[int, int]], block_size: int) -> int:
    """Largest block-aligned position `<= num_computed_tokens` that is not strictly inside any `(start, length)`."""
    end = num_computed_tokens
    moved = True
    while moved and end > 0:
        moved = False
        for start, length in image_ranges:
            if start < end < start + length:
                end = start // block_size * block_size
                moved = True
    return end


class WholeImagePrefixHitsMixin:
    """Cuts a local prefix-cache hit back so that it never ends inside an image."""

    def _get_local_prefix_cache_hit(self, request):
        blocks, num_hit, boundary, diverged = super()._get_local_prefix_cache_hit(request)
        if num_hit and request.mm_features:
            ranges = [(f.mm_position.offset, f.mm_position.length) for f in request.mm_features]
            end = hit_end_outside_images(num_hit, ranges, self.block_size)
            if end != num_hit:
                blocks = self.kv_cache_manager.truncate_computed_blocks(blocks, end)
                num_hit = end
        return blocks, num_hit, boundary, diverged


class LlavaVRScheduler(WholeImagePrefixHitsMixin, Scheduler):
    pass


class LlavaVRAsyncScheduler(WholeImagePrefixHitsMixin, AsyncScheduler):
    pass


def llava_vr_scheduler(*args, vllm_config, **kwargs):
    """`SchedulerConfig.scheduler_cls` for LLaVA-VR: built after vLLM has decided on async scheduling."""
    cls = LlavaVRAsyncScheduler if vllm_config.scheduler_config.async_scheduling else LlavaVRScheduler
    return cls(*args, vllm_config=vllm_config, **kwargs)


__all__ = ["LlavaVRAsyncScheduler", "LlavaVRScheduler", "hit_end_outside_images", "llava_vr_scheduler"]
