# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""An image (video) token in a prompt without images or videos is the client's error: a 400, as Transformers'
processor refuses it.

vLLM runs a model's multimodal processor only for prompts that carry images or videos (there,
`LlavaVRMultiModalProcessor.apply` refuses image / video tokens beyond the items given). A text-only prompt goes
straight to the engine, so an `<image>` or `<video>` typed in it would be embedded as a plain token and answered with
garbage. vLLM's input validation
(`InputProcessor._validate_model_input`, which the server reports as a 400 and `LLM` raises as `ValueError`) is
wrapped once to refuse it for LLaVA-VR models; other models are untouched.
"""

from functools import wraps


def refuse_image_tokens_without_images(architecture: str) -> None:
    """Wraps vLLM's input validation once: a text-only prompt of an `architecture` model holding image or video tokens
    is refused."""
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.engine.input_processor import InputProcessor

    from .token_counts import supports_video

    original = InputProcessor._validate_model_input
    if getattr(original, "_llava_vr_wrapped", False):
        return

    @wraps(original)
    def _validate_model_input(self, prompt_input, prompt_type):
        original(self, prompt_input, prompt_type)
        if prompt_input["type"] != "token" or self.model_config.architecture != architecture:
            return
        config = self.model_config.hf_config
        token_ids = list(prompt_input["prompt_token_ids"])
        for modality in ("image", "video") if supports_video(config) else ("image",):
            token_id = getattr(config, f"{modality}_token_id", None)
            found = token_ids.count(token_id) if token_id is not None else 0
            if found:
                raise VLLMValidationError(
                    f"the prompt holds {found} {modality} token(s) but no {modality}: each {modality} token stands for "
                    f"a {modality} given with the request, and the text must not contain the {modality} token itself",
                    parameter="prompt",
                )

    _validate_model_input._llava_vr_wrapped = True
    InputProcessor._validate_model_input = _validate_model_input


__all__ = ["refuse_image_tokens_without_images"]
