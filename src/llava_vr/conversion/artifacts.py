# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Everything a converted folder holds besides the weights: tokenizer, image processor, processor, generation config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from transformers import AutoImageProcessor, AutoTokenizer, GenerationConfig
from transformers.utils.constants import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from ..configuration_llava_vr import LlavaVRConfig
from ..data.image_processors import anyres_image_processor
from ..processing_llava_vr import LlavaVRProcessor
from .errors import ConversionError, one_line
from .plan import TOWER_NAMES, Plan

if TYPE_CHECKING:
    from .sources import Source

# lmms-lab checkpoints carry no image processor: LLaVA-NeXT-style for CLIP, OneVision-style (mean/std 0.5) for SigLIP.
TOWER_IMAGE_PROCESSORS = {
    "clip": ("next", OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "LLaVA-NeXT-style, CLIP mean/std"),
    "siglip": ("onevision", IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, "LLaVA-OneVision-style, mean/std 0.5"),
}


def load_tokenizer(path: Path, add_image_token: bool = False):
    """The source's tokenizer; with `add_image_token`, `<image>` is added as a special token and registered as the
    tokenizer's `image_token` (saved in tokenizer_config.json's `extra_special_tokens`)."""
    kwargs = {"extra_special_tokens": {"image_token": "<image>"}} if add_image_token else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except Exception as error:
        raise ConversionError(f"no usable tokenizer in {path} ({one_line(error)}); pass --tokenizer PATH") from None
    if add_image_token and tokenizer.convert_tokens_to_ids("<image>") in (None, tokenizer.unk_token_id):
        tokenizer.add_tokens(["<image>"], special_tokens=True)
    return tokenizer


def build_image_processor(tower: str, image_size: int, pinpoints):
    """The Transformers AnyRes image processor matching the tower, for `image_size`-px tiles."""
    kind, mean, std, _ = TOWER_IMAGE_PROCESSORS[tower]
    return anyres_image_processor(kind, tile=image_size, pinpoints=pinpoints, image_mean=list(mean), image_std=list(std))


def source_image_processor(src: Source, plan: Plan, config: LlavaVRConfig):
    """The source's own image processor when it has one (Transformers checkpoints), else a matching one; its
    pinpoints are the model config's."""
    if src.kind != "lmms_lab" and (src.path / "preprocessor_config.json").is_file():
        try:
            image_processor = AutoImageProcessor.from_pretrained(src.path)
        except Exception as error:
            raise ConversionError(f"cannot load the source's image processor ({one_line(error)})") from None
        source_pinpoints = [list(p) for p in (getattr(image_processor, "image_grid_pinpoints", None) or [])]
        if source_pinpoints and source_pinpoints != config.image_grid_pinpoints:
            plan.notes.append("image processor pinpoints replaced by the model config's")
        image_processor.image_grid_pinpoints = config.image_grid_pinpoints
        return image_processor
    tile = config.vision_config.image_size
    plan.notes.append(
        f"image processor built for {TOWER_NAMES[plan.tower]} ({tile}-px tiles, {TOWER_IMAGE_PROCESSORS[plan.tower][3]})"
    )
    return build_image_processor(plan.tower, tile, config.image_grid_pinpoints)


def build_processor(image_processor, tokenizer, config: LlavaVRConfig) -> LlavaVRProcessor:
    """LLaVA-VR's processor, counting `config.num_image_tokens_per_tile` tokens per tile (follows the projector)."""
    processor = LlavaVRProcessor.from_model_config(config, image_processor, tokenizer)
    image_token_id = getattr(processor, "image_token_id", None)
    if image_token_id is None:
        image_token_id = tokenizer.convert_tokens_to_ids(getattr(processor, "image_token", "<image>"))
    if image_token_id != config.image_token_index:
        raise ConversionError(
            f"the tokenizer's image token has id {image_token_id} but the model's image_token_index is "
            f"{config.image_token_index}"
        )
    return processor


def build_generation_config(src: Source, tokenizer) -> GenerationConfig:
    """The source's generation config (else the default), with bos/eos/pad ids from the tokenizer where unset."""
    try:
        generation_config = GenerationConfig.from_pretrained(src.path)
    except Exception:
        generation_config = GenerationConfig()
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(generation_config, name, None) is None and getattr(tokenizer, name, None) is not None:
            setattr(generation_config, name, getattr(tokenizer, name))
    return generation_config
