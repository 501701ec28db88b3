# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""vLLM plugin (`vllm.general_plugins` entry point `llava_vr`): registers the LLaVA-VR model and its config hook.

vLLM calls `register()` in every process it starts (front end, engine core, workers, the model-inspection
subprocess), possibly more than once: it is idempotent. The model class is registered lazily by name, so importing
the plugin imports neither torch models nor the package's Transformers classes.
"""

ARCHITECTURE = "LlavaVRForConditionalGeneration"
MODEL_CLASS = "llava_vr.serving.vllm_model:LlavaVRForConditionalGeneration"


def register() -> None:
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    from .vllm_config_hook import LlavaVRConfigHook

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
    MODELS_CONFIG_MAP[ARCHITECTURE] = LlavaVRConfigHook


__all__ = ["ARCHITECTURE", "MODEL_CLASS", "register"]
