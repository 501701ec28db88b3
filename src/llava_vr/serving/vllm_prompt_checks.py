# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""An image token in a prompt without images is the client's error: a 400, as Transformers' processor refuses it.

vLLM runs a model's multimodal processor only for prompts that carry images (there, `LlavaVRMultiModalProcessor.apply`
refuses image tokens beyond the images given). A text-only prompt goes straight to the engine, so an `<image>` typed
in it would be embedded as a plain token and answered with garbage. vLLM's input validation
(`InputProcessor._validate_model_input`, which the server reports as a 400 and `LLM` raises as `ValueError`) is
wrapped once to refuse it for LLaVA-VR models; other models are untouched.
"""

from functools import wraps


def refuse_image_tokens_without_images(architecture: str) -> None:
    """Wraps vLLM's input validation once: a text-only prompt of an `architecture` model holding image tokens is
    refused."""
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.engine.input_processor import InputProcessor

    original = InputProcessor._validate_model_input
    if getattr(original, "_llava_vr_wrapped", False):
        return

    @wraps(original)
    def _validate_model_input(self, prompt_input, prompt_type):
        original(self, prompt_input, prompt_type)
        if prompt_input["type"] != "token" or self.model_config.architecture != architecture:
            return
        image_token_id = getattr(self.model_config.hf_config, "image_token_id", None)
        found = list(prompt_input["prompt_token_ids"]).count(image_token_id)
        if found:
            raise VLLMValidationError(
                f"the prompt holds {found} image token(s) but no image: each image token stands for an image given "
                "with the request, and the text must not contain the image token itself",
                parameter="prompt",
            )

    _validate_model_input._llava_vr_wrapped = True
    InputProcessor._validate_model_input = _validate_model_input


__all__ = ["refuse_image_tokens_without_images"]
