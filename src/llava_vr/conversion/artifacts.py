# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Everything a converted folder holds besides the weights: tokenizer, image processor, processor, generation config."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoImageProcessor, AutoTokenizer, GenerationConfig
from transformers.utils.constants import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
)

from ..configuration_llava_vr import LlavaVRConfig
from ..data.image_processors import anyres_image_processor
from ..hub.refusals import LlavaVRRefusal, one_line
from ..processing_llava_vr import LlavaVRProcessor
from .plan import TOWER_NAMES, Plan
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
        raise LlavaVRRefusal(f"no usable tokenizer in {path} ({one_line(error)}); pass --tokenizer PATH") from None
    if add_image_token and tokenizer.convert_tokens_to_ids("<image>") in (None, tokenizer.unk_token_id):
        tokenizer.add_tokens(["<image>"], special_tokens=True)
    return tokenizer


def built_image_processor(src: Source, plan: Plan, config: LlavaVRConfig, args):
    """An AnyRes image processor for a source without one: LLaVA-NeXT- or OneVision-style as the source (lmms-lab:
    as its tower), normalised by `--image-mean/--image-std`, CLIP's (`--assume-clip-normalisation`) or, for lmms-lab,
    the tower's."""
    kind, mean, std, how = TOWER_IMAGE_PROCESSORS[plan.tower]
    kind = {"llava_next": "next", "llava_onevision": "onevision"}.get(src.kind, kind)
    if args.image_mean is not None:
        mean, std, how = args.image_mean, args.image_std, f"--image-mean {args.image_mean} --image-std {args.image_std}"
    elif args.assume_clip_normalisation:
        mean, std, how = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "CLIP mean/std (--assume-clip-normalisation)"
    tile = config.vision_config.image_size
    plan.notes.append(f"image processor built for {TOWER_NAMES[plan.tower]} ({tile}-px tiles, {how})")
    return anyres_image_processor(
        kind, tile=tile, pinpoints=config.image_grid_pinpoints, image_mean=list(mean), image_std=list(std)
    )


def stored_image_processor(path: Path) -> dict | None:
    """The image processor settings a folder stores: `preprocessor_config.json`, or the `image_processor` entry of
    `processor_config.json` (Transformers >= 5 saves a processor that way); None when it has neither."""
    for name, key in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        file = path / name
        if file.is_file():
            try:
                data = json.loads(file.read_text())
            except json.JSONDecodeError as error:
                raise LlavaVRRefusal(f"{file} is not valid JSON ({error})") from None
            data = data.get(key) if key else data
            if isinstance(data, dict) and data:
                return data
    return None


def load_image_processor(path: Path, stored: dict):
    """The source's image processor through Transformers' own loader, checked against the stored mean/std."""
    try:
        image_processor = AutoImageProcessor.from_pretrained(path)
    except Exception as error:
        raise LlavaVRRefusal(f"cannot load the source's image processor from {path} ({one_line(error)})") from None
    for name in ("image_mean", "image_std"):
        if name in stored and list(getattr(image_processor, name)) != list(stored[name]):
            raise LlavaVRRefusal(
                f"the source's image processor was loaded with {name} {list(getattr(image_processor, name))}, but "
                f"{path} stores {stored[name]}; pass --image-mean/--image-std explicitly"
            )
    return image_processor


def source_image_processor(src: Source, plan: Plan, config: LlavaVRConfig, args):
    """The source's own image processor (Transformers checkpoints; from whichever file holds it), else one built
    for the tower; `--image-mean/--image-std` replace the normalisation. Its pinpoints are the model config's.
    A Transformers source without one is refused unless the normalisation is given (never guessed)."""
    explicit = args.image_mean is not None
    stored = stored_image_processor(src.path) if src.kind != "lmms_lab" else None
    if stored is not None:
        image_processor = load_image_processor(src.path, stored)
        source_pinpoints = [list(p) for p in (getattr(image_processor, "image_grid_pinpoints", None) or [])]
        if source_pinpoints and source_pinpoints != config.image_grid_pinpoints:
            plan.notes.append("image processor pinpoints replaced by the model config's")
        image_processor.image_grid_pinpoints = config.image_grid_pinpoints
        if explicit:
            plan.notes.append(
                f"image mean/std {list(image_processor.image_mean)}/{list(image_processor.image_std)} "
                f"replaced by --image-mean {args.image_mean} --image-std {args.image_std}"
            )
            image_processor.image_mean, image_processor.image_std = list(args.image_mean), list(args.image_std)
        return image_processor
    if src.kind != "lmms_lab" and not (explicit or args.assume_clip_normalisation):
        raise LlavaVRRefusal(
            f"{src.path} has no image processor (no preprocessor_config.json, no image_processor entry in "
            "processor_config.json), so the pixel normalisation the model was trained with is unknown: copy the "
            "source model's processor files into it, or pass --image-mean R G B --image-std R G B (0.5 0.5 0.5 for "
            "SigLIP towers), or --assume-clip-normalisation for CLIP's mean/std"
        )
    return built_image_processor(src, plan, config, args)


def build_processor(image_processor, tokenizer, config: LlavaVRConfig) -> LlavaVRProcessor:
    """LLaVA-VR's processor, counting `config.num_image_tokens_per_tile` tokens per tile (follows the projector)."""
    processor = LlavaVRProcessor.from_model_config(config, image_processor, tokenizer)
    image_token_id = getattr(processor, "image_token_id", None)
    if image_token_id is None:
        image_token_id = tokenizer.convert_tokens_to_ids(getattr(processor, "image_token", "<image>"))
    if image_token_id != config.image_token_index:
        raise LlavaVRRefusal(
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
