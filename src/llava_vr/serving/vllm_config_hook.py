# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""What LLaVA-VR sets or refuses in a vLLM configuration, so that it is served correctly with vLLM's defaults.

Registered in vLLM's per-architecture hooks (`MODELS_CONFIG_MAP`), it runs while the `VllmConfig` is built, in the
front end before any engine starts. Vision Remember needs all of an image's tokens in the same forward pass, so:

- `disable_chunked_mm_input=True`: chunked prefill may split a prompt, never an image (vLLM then refuses to start if
  one image could exceed `max_num_batched_tokens`).
- the scheduler is LLaVA-VR's (`vllm_scheduler.py`): a prefix-cache hit never ends inside an image. A custom
  scheduler is refused while prefix caching is on.
- CUDA graphs capture decode batches only (`FULL_DECODE_ONLY` unless set): a graph replaying a prefill would skip
  VR. `cudagraph_mode=FULL` (which captures prefills) is refused.
- refused: speculative decoding, pipeline parallelism, KV / encoder-cache transfer connectors, and precomputed image
  embeddings (`enable_mm_embeds`): each could hand the decoder part of an image or an image without VR inputs.
"""

import logging

from vllm.config.compilation import CUDAGraphMode
from vllm.model_executor.models.config import VerifyAndUpdateConfig

logger = logging.getLogger(__name__)

SCHEDULER = "llava_vr.serving.vllm_scheduler.llava_vr_scheduler"


def _refuse(setting: str, why: str):
    raise ValueError(f"LLaVA-VR cannot be served with {setting}: {why}")


class LlavaVRConfigHook(VerifyAndUpdateConfig):
    @staticmethod
    def verify_and_update_config(vllm_config) -> None:
        _schedule_whole_images(vllm_config)
        _capture_decode_only(vllm_config)
        _refuse_partial_image_paths(vllm_config)


def _schedule_whole_images(vllm_config) -> None:
    scheduler = vllm_config.scheduler_config
    if not scheduler.disable_chunked_mm_input:
        logger.info("LLaVA-VR: disable_chunked_mm_input=True (Vision Remember needs whole images in one step)")
        scheduler.disable_chunked_mm_input = True
    if scheduler.scheduler_cls is None or scheduler.scheduler_cls == SCHEDULER:
        scheduler.scheduler_cls = SCHEDULER
        return
    from .vllm_scheduler import WholeImagePrefixHitsMixin

    custom = scheduler.get_scheduler_cls()
    if vllm_config.cache_config.enable_prefix_caching is not False and not (
        isinstance(custom, type) and issubclass(custom, WholeImagePrefixHitsMixin)
    ):
        _refuse(
            f"scheduler_cls={scheduler.scheduler_cls!r} and prefix caching",
            "a prefix-cache hit could end inside an image; keep the default scheduler, derive yours from "
            "llava_vr.serving.vllm_scheduler.WholeImagePrefixHitsMixin, or disable prefix caching",
        )


def _capture_decode_only(vllm_config) -> None:
    compilation = vllm_config.compilation_config
    if compilation.cudagraph_mode is None:
        compilation.cudagraph_mode = CUDAGraphMode.FULL_DECODE_ONLY
    elif compilation.cudagraph_mode == CUDAGraphMode.FULL:
        _refuse("cudagraph_mode=FULL", "a CUDA graph replaying a prefill would skip Vision Remember; use "
                "FULL_DECODE_ONLY (the default for LLaVA-VR) or NONE")


def _refuse_partial_image_paths(vllm_config) -> None:
    if vllm_config.speculative_config is not None:
        _refuse("speculative decoding", "not supported with Vision Remember")
    if vllm_config.parallel_config.pipeline_parallel_size > 1:
        _refuse("pipeline parallelism", "Vision Remember runs on the first stage's layers only; not supported")
    if vllm_config.kv_transfer_config is not None:
        _refuse("a KV transfer connector", "an external KV hit could end inside an image")
    if vllm_config.ec_transfer_config is not None:
        _refuse("an encoder-cache transfer connector", "LLaVA-VR's encoder rows vary in width per image")
    multimodal = vllm_config.model_config.multimodal_config
    if multimodal is not None and multimodal.enable_mm_embeds:
        _refuse("enable_mm_embeds", "precomputed image embeddings carry none of the features Vision Remember reads")


__all__ = ["LlavaVRConfigHook", "SCHEDULER"]
