# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""What LLaVA-VR changes in Transformers' `GenerationMixin`: images reach every prefill, and never a chunked one.

- Chunked prefill (`prefill_chunk_size`) through an image is refused: Vision Remember runs bidirectional attention over
  all of an image's tokens in one forward.
- Assisted / speculative decoding (`assistant_model=`): Transformers calls the assistant's `generate` with
  `is_first_iteration=False` on every round, so the assistant's own prefill loses the images (`mm_encoder_outputs` and
  `pixel_values` are dropped outside a first iteration) and the model refuses image tokens without images. Here a
  forward that starts from an empty cache keeps its images, whatever `is_first_iteration` says. An assistant that is
  another LLaVA-VR model encodes the images with its own tower and projector, once, before generation (handed over as
  `assistant_mm_encoder_outputs`); the model itself as assistant reuses the target's encoding.
"""

import torch
from transformers import GenerationMixin

from .compat_llava_vr import GENERATION_CACHE

# `generate()` kwargs that `get_image_features` reads (Transformers pops them after encoding the images).
IMAGE_FEATURE_KWARGS = (
    "pixel_values",
    "image_sizes",
    "vision_feature_layer",
    "vision_feature_select_strategy",
    "vision_aspect_ratio",
    "batch_num_images",
)


def starts_from_empty_cache(past_key_values) -> bool:
    """Whether a forward with this cache is a prefill. Compileable (static) caches are never asked: their length is a
    tensor, reading it would sync every decode step, and assisted decoding refuses them anyway."""
    if past_key_values is None or getattr(past_key_values, "is_compileable", False):
        return False
    return past_key_values.get_seq_length() == 0


class LlavaVRGenerationMixin(GenerationMixin):
    """`GenerationMixin` for `LlavaVRForConditionalGeneration` (see the module docstring)."""

    def generate(self, *args, **kwargs):
        """`GenerationMixin.generate`, refusing chunked prefill through images, and encoding the images for an
        assistant that is another LLaVA-VR model."""
        generation_config = kwargs.get("generation_config") or self.generation_config
        chunk = kwargs.get("prefill_chunk_size", getattr(generation_config, "prefill_chunk_size", None))
        has_images = (
            kwargs.get("pixel_values") is not None or (kwargs.get("mm_encoder_outputs") or {}).get("image") is not None
        )
        if chunk and has_images and self.config.vision_remember_layers:
            raise ValueError(
                "prefill_chunk_size is not supported with images: Vision Remember runs bidirectional attention over "
                "all of an image's tokens in one forward; pass prefill_chunk_size=None"
            )
        assistant = kwargs.get("assistant_model")
        if (
            isinstance(assistant, LlavaVRGenerationMixin)
            and assistant is not self
            and kwargs.get("pixel_values") is not None
        ):
            kwargs["assistant_mm_encoder_outputs"] = {"image": self._encode_for(assistant, kwargs)}
        return super().generate(*args, **kwargs)

    @staticmethod
    @torch.no_grad()
    def _encode_for(model, kwargs: dict):
        """`model.get_image_features` of the image kwargs of a `generate()` call, on `model`'s device."""
        image_kwargs = {
            key: value.to(model.device) if isinstance(value, torch.Tensor) else value
            for key, value in kwargs.items()
            if key in IMAGE_FEATURE_KWARGS and value is not None
        }
        return model.get_image_features(**image_kwargs, return_dict=True)

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        past_key_values=None,
        cache=None,
        is_first_iteration: bool | None = False,
        assistant_mm_encoder_outputs: dict | None = None,
        **kwargs,
    ) -> dict:
        """`GenerationMixin.prepare_inputs_for_generation`, keeping the images on a prefill that Transformers calls
        not first (an assistant's): `assistant_mm_encoder_outputs` (this model's own encoding, when it assists another
        LLaVA-VR model), else the `mm_encoder_outputs` / `pixel_values` of the call."""
        cache = cache if cache is not None else past_key_values  # named `cache` from Transformers 5.24 on
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, is_first_iteration=is_first_iteration, **{GENERATION_CACHE: cache}, **kwargs
        )
        if not is_first_iteration and starts_from_empty_cache(cache):
            images = assistant_mm_encoder_outputs or kwargs.get("mm_encoder_outputs")
            if images:
                model_inputs["mm_encoder_outputs"] = images
            elif kwargs.get("pixel_values") is not None:
                model_inputs["pixel_values"] = kwargs["pixel_values"]
        return model_inputs


__all__ = ["LlavaVRGenerationMixin", "starts_from_empty_cache"]
