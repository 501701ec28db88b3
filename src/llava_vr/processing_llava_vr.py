# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""LLaVA-VR processor: Transformers' AnyRes image processors + a Qwen2 tokenizer, `<image>` expanded to the exact
number of image tokens the model scatters (counted with the model's own `anyres_layout`)."""

import numpy as np
import torch
from PIL import Image
from transformers.processing_utils import ProcessorMixin

from .packing_llava_vr import anyres_layout, images_use_anyres

# Qwen2 chat format; images are `{"type": "image"}` items rendered as `<image>` + newline. Assistant replies (with
# their `<|im_end|>`) sit in `{% generation %}` blocks, so TRL's `assistant_only_loss=True` masks everything else.
DEFAULT_CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for item in content -%}"
    "{%- if item['type'] == 'image' or 'image' in item -%}{{ '<image>\n' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ render(message['content']) }}{{ '<|im_end|>' }}"
    "{% endgeneration %}{{ '\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}{{ render(message['content']) }}{{ '<|im_end|>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)


def to_rgb(image):
    """PIL image of any mode (L, LA, P, RGBA, I;16, I, F, CMYK) -> RGB; 16-bit / float scaled to 8 bits."""
    if not isinstance(image, Image.Image) or image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(pixels.max()), 1.0)
        image = Image.fromarray(np.clip(pixels / peak * 255.0, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "P":
        image = image.convert("RGBA")
    return image.convert("RGB")


class LlavaVRProcessor(ProcessorMixin):
    r"""
    Processor of LLaVA-VR checkpoints, used like Transformers' `LlavaOnevisionProcessor`.

    Args:
        image_processor: a Transformers AnyRes image processor (`LlavaNextImageProcessor(Pil)` for checkpoints from
            LLaVA-NeXT, `LlavaOnevisionImageProcessor(Pil)` for LLaVA-OneVision ones); no torchvision needed.
        tokenizer: the Qwen2 tokenizer, with an `<image>` token.
        num_image_tokens (`int`): image tokens per tile after the projector (`config.num_image_tokens_per_tile`:
            576 for `mlp` on CLIP-336, 144 pooled; 729 / 196 for SigLIP-384).
        vision_aspect_ratio (`str`): `config.vision_aspect_ratio` (`anyres`, `anyres_max_N` or `pad`).
        multi_image_anyres (`bool`): `config.multi_image_anyres`.
        chat_template (`str`, *optional*): defaults to `DEFAULT_CHAT_TEMPLATE`.
        image_token (`str`): the placeholder, `<image>`.
    """

    _auto_class = "AutoProcessor"

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        num_image_tokens=None,
        vision_aspect_ratio="anyres_max_9",
        multi_image_anyres=False,
        chat_template=None,
        image_token="<image>",
        **kwargs,
    ):
        if num_image_tokens is None:
            raise ValueError("LlavaVRProcessor needs num_image_tokens (tokens per tile: config.num_image_tokens_per_tile)")
        self.num_image_tokens = int(num_image_tokens)
        self.token_grid = int(round(self.num_image_tokens**0.5))
        if self.token_grid**2 != self.num_image_tokens:
            raise ValueError(f"num_image_tokens={num_image_tokens} is not a square token grid")
        self.vision_aspect_ratio = vision_aspect_ratio
        self.multi_image_anyres = bool(multi_image_anyres)
        self.image_token = getattr(tokenizer, "image_token", None) or image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {self.image_token!r} token: add it as a special token")
        self._images_per_prompt = None
        super().__init__(image_processor, tokenizer, chat_template=chat_template or DEFAULT_CHAT_TEMPLATE)

    @property
    def tile_size(self) -> int:
        crop = getattr(self.image_processor, "crop_size", None)
        size = crop if crop else self.image_processor.size
        size = size if isinstance(size, dict) else size.__dict__
        return int(size.get("height") or size.get("shortest_edge"))

    def image_layout(self, image_size, use_anyres: bool = True):
        """The model's `AnyResLayout` for an image of `(height, width)` pixels."""
        return anyres_layout(
            image_size, self.image_processor.image_grid_pinpoints, self.tile_size, self.token_grid,
            self.vision_aspect_ratio, use_anyres,
        )

    def __call__(self, images=None, text=None, **kwargs):
        """Tokenizes `text` with each `<image>` expanded to its image tokens and preprocesses `images` (flat, or nested
        per prompt). Returns `input_ids`, `attention_mask` and, with images, `pixel_values`
        `(num_images, max_tiles, 3, tile, tile)`, `image_sizes` `(num_images, 2)` and `batch_num_images`."""
        prompts = [text] if isinstance(text, str) else text
        counts = [p.count(self.image_token) for p in prompts] if prompts is not None else None
        if images is not None:
            images = self._nest_per_prompt(images, counts)
        self._images_per_prompt = counts if images is not None and counts is not None else None
        try:
            outputs = super().__call__(images=images, text=text, **kwargs)
        finally:
            self._images_per_prompt = None
        if "pixel_values" in outputs and counts is not None:
            sizes = outputs["image_sizes"]
            outputs["batch_num_images"] = sizes.new_tensor(counts) if torch.is_tensor(sizes) else counts
        return outputs

    def _nest_per_prompt(self, images, counts):
        """Flat or nested images -> one list per prompt (RGB), checking the counts against the `<image>` tokens."""
        if isinstance(images, Image.Image) or not isinstance(images, (list, tuple)):
            images = [images]
        nested = all(isinstance(i, (list, tuple)) for i in images) and len(images) > 0
        flat = [to_rgb(i) for group in images for i in group] if nested else [to_rgb(i) for i in images]
        if counts is None:
            return [[image] for image in flat]
        if sum(counts) != len(flat):
            raise ValueError(
                f"{sum(counts)} {self.image_token} placeholders in the text (per prompt: {counts}) but {len(flat)} "
                "images were given: each image needs exactly one placeholder"
            )
        if nested and [len(g) for g in images] != counts:
            raise ValueError(f"images per prompt {[len(g) for g in images]} do not match the placeholders {counts}")
        starts = np.cumsum([0] + counts)
        return [flat[a:b] for a, b in zip(starts[:-1], starts[1:])]

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        counts = self._images_per_prompt
        tiled = images_use_anyres(counts, len(image_inputs["image_sizes"]), self.multi_image_anyres)[image_idx]
        return self.image_token * self.image_layout(image_inputs["image_sizes"][image_idx], tiled).num_tokens

    def _check_special_mm_tokens(self, text, text_inputs, modalities):
        input_ids = text_inputs["input_ids"]
        input_ids = input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids
        for prompt, ids in zip(text, input_ids):
            needed, kept = prompt.count(self.image_token), list(ids).count(self.image_token_id)
            if needed != kept:
                full = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
                raise ValueError(
                    f"truncation would cut through image tokens ({kept} of {needed} kept): raise max_length to at least "
                    f"{full} or disable truncation"
                )

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs):
        """Image tokens per image of `(height, width)` (each alone in its prompt)."""
        from transformers.processing_utils import MultiModalData

        if image_sizes is None:
            return MultiModalData()
        tokens = [self.image_layout(size, True).num_tokens for size in image_sizes]
        return MultiModalData(num_image_tokens=tokens, num_image_patches=[1] * len(image_sizes))

    @property
    def model_input_names(self):
        return list(self.tokenizer.model_input_names) + ["pixel_values", "image_sizes", "batch_num_images"]


__all__ = ["DEFAULT_CHAT_TEMPLATE", "LlavaVRProcessor"]
