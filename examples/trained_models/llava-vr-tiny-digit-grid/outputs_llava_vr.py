# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""What LLaVA-VR's models return: the image features `generate()` carries to the prefill, and the model outputs."""

from dataclasses import dataclass

import torch
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast

from .vision_remember_inputs_llava_vr import VisionRememberFeatures


@dataclass
class LlavaVRImageFeaturesOutput(BaseModelOutputWithPooling):
    r"""
    Output of `get_image_features`; `generate()` hands it to the prefill instead of `pixel_values`.

    pooler_output (`list[torch.Tensor]`):
        Per image, its packed vision tokens `(tokens_i, hidden_size)`, in `<image>` order.
    deepstack_features (`VisionRememberFeatures`, *optional*):
        What Vision Remember reads of the images (per image: multi-level features, saliency, token cells); read it as
        `vision_remember_features`. `None` for a model without VR. Not Qwen3-VL's per-layer features: VR's inputs
        travel in this field because it is the one `generate()` keeps and expands, per image, with the pooled
        features for beams / `num_return_sequences` (a field of another name is dropped or mis-expanded there).
    """

    deepstack_features: VisionRememberFeatures | None = None

    @property
    def vision_remember_features(self) -> VisionRememberFeatures | None:
        """`deepstack_features` by name, also after `generate()` has expanded it (into a plain 3-list)."""
        return None if self.deepstack_features is None else VisionRememberFeatures(*self.deepstack_features)


@dataclass
class LlavaVRModelOutputWithPast(BaseModelOutputWithPast):
    r"""
    image_hidden_states (`torch.Tensor`, *optional*):
        `(num_image_tokens, hidden_size)` packed projected image features scattered into the sequence.
    """

    image_hidden_states: torch.Tensor | None = None


@dataclass
class LlavaVRCausalLMOutputWithPast(CausalLMOutputWithPast):
    r"""
    `CausalLMOutputWithPast` (loss, logits, the KV cache under the installed Transformers' name: `past_key_values`,
    `cache` from 5.24 on; hidden states, attentions) and:

    image_hidden_states (`torch.Tensor`, *optional*): `(num_image_tokens, hidden_size)` projected image features.
    """

    image_hidden_states: torch.Tensor | None = None


__all__ = ["LlavaVRCausalLMOutputWithPast", "LlavaVRImageFeaturesOutput", "LlavaVRModelOutputWithPast"]
