# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""LLaVA-VR: LLaVA-NeXT / LLaVA-OneVision with Vision Remember, as a Transformers model family.

Importing the package registers `llava_vr` with `AutoConfig`, `AutoModel`, `AutoModelForImageTextToText` and
`AutoProcessor`, so `from_pretrained` works without `trust_remote_code` too.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .configuration_llava_vr import LlavaVRConfig
from .modeling_llava_vr import (
    LlavaVRForConditionalGeneration,
    LlavaVRImageFeaturesOutput,
    LlavaVRModel,
    LlavaVRPreTrainedModel,
    LlavaVRTextModel,
)
from .packing_llava_vr import AnyResLayout, anyres_layout
from .processing_llava_vr import DEFAULT_CHAT_TEMPLATE, LlavaVRProcessor
from .vision_remember_llava_vr import VisionRemember, VisionRememberFeatures, VisionRememberInputs

AutoConfig.register("llava_vr", LlavaVRConfig, exist_ok=True)
AutoModel.register(LlavaVRConfig, LlavaVRModel, exist_ok=True)
AutoModelForImageTextToText.register(LlavaVRConfig, LlavaVRForConditionalGeneration, exist_ok=True)
AutoProcessor.register(LlavaVRConfig, LlavaVRProcessor, exist_ok=True)

__version__ = "0.1.0"
__all__ = [
    "AnyResLayout",
    "DEFAULT_CHAT_TEMPLATE",
    "LlavaVRProcessor",
    "LlavaVRConfig",
    "LlavaVRForConditionalGeneration",
    "LlavaVRImageFeaturesOutput",
    "LlavaVRModel",
    "LlavaVRPreTrainedModel",
    "LlavaVRTextModel",
    "VisionRemember",
    "VisionRememberFeatures",
    "VisionRememberInputs",
    "anyres_layout",
]
