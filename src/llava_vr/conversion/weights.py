# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Source tensors against LLaVA-VR: what is carried, what is new (untrained), what is dropped; the model built."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from transformers.utils import logging as hf_logging

from ..configuration_llava_vr import LlavaVRConfig
from ..hub.refusals import LlavaVRRefusal
from ..modeling_llava_vr import LlavaVRForConditionalGeneration

COMPONENTS = [
    ("model.vision_tower.", "vision tower"),
    ("model.multi_modal_projector.", "projector"),
    ("model.image_newline", "image_newline"),
    ("model.language_model.vision_remember.", "Vision Remember"),
    ("model.language_model.", "LLM (Qwen2)"),
    ("lm_head.", "LLM (Qwen2)"),
]
ESSENTIAL = ["model.language_model.embed_tokens.weight", "model.multi_modal_projector.linear_2.weight"]


@dataclass
class WeightReport:
    carried: dict[str, list[str]]  # component -> keys carried from the source
    new: dict[str, list[str]]  # module -> keys initialised fresh (untrained)
    dropped: list[str]  # source tensors not used
    grown: list[str]  # embeddings grown for <image>
    numel: dict[str, int]  # elements per LLaVA-VR tensor
    parameters_new: int = 0
    parameters_total: int = 0


def component_of(key: str) -> str:
    """`model.vision_tower.encoder...` -> `vision tower` (the card's groups)."""
    return next(name for prefix, name in COMPONENTS if key.startswith(prefix))


def new_module_of(key: str) -> str:
    """`model.language_model.vision_remember.1.expand_in.weight` -> `model.language_model.vision_remember.1`."""
    match = re.match(r"(model\.language_model\.vision_remember\.\d+)\.", key)
    if match:
        return match.group(1)
    return key.rsplit(".", 1)[0] if key.count(".") > 1 else key


def drop_misfits(state_dict, expected: dict[str, tuple]) -> list[str]:
    """Removes the source tensors LLaVA-VR does not use (SigLIP's pooling head; a projector layer whose input width
    changed, e.g. pixel_shuffle's linear_1 reads 4x the width: the whole layer starts fresh, its bias included);
    refuses any other tensor without a place or with another shape. Returns the dropped names."""
    dropped = []
    for key in list(state_dict):
        if key not in state_dict:  # dropped with its layer
            continue
        if key not in expected:
            if not key.startswith("model.vision_tower.head."):
                raise LlavaVRRefusal(f"source tensor {key!r} has no place in LLaVA-VR")
            dropped.append(key)
            del state_dict[key]
        elif tuple(state_dict[key].shape) != expected[key]:
            if not key.startswith("model.multi_modal_projector."):
                raise LlavaVRRefusal(
                    f"source tensor {key} has shape {tuple(state_dict[key].shape)}, LLaVA-VR expects {expected[key]}"
                )
            module = key.rsplit(".", 1)[0] + "."
            for other in [k for k in state_dict if k.startswith(module)]:
                dropped.append(other)
                del state_dict[other]
    return dropped


def plan_weights(config: LlavaVRConfig, state_dict) -> WeightReport:
    """Matches the renamed source tensors against a meta-device LLaVA-VR of `config` (misfits removed)."""
    with torch.device("meta"):
        skeleton = LlavaVRForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    dropped = drop_misfits(state_dict, expected)
    tied = bool(config.tie_word_embeddings)
    carried: dict[str, list[str]] = {}
    new: dict[str, list[str]] = {}
    for key in expected:
        if key in state_dict or (tied and key == "lm_head.weight"):
            carried.setdefault(component_of(key), []).append(key)
        else:
            new.setdefault(new_module_of(key), []).append(key)
    missing_essential = [k for k in ESSENTIAL if k not in state_dict]
    if missing_essential or not any(k.startswith("model.vision_tower.") for k in state_dict):
        raise LlavaVRRefusal(f"the source lacks essential weights: {missing_essential or ['model.vision_tower.*']}")
    numel = {k: math.prod(shape) for k, shape in expected.items()}
    parameters_new = sum(numel[k] for keys in new.values() for k in keys)
    parameters_total = sum(p.numel() for p in skeleton.parameters())
    return WeightReport(carried, new, dropped, [], numel, parameters_new, parameters_total)


def grow_embeddings(state_dict, new_rows: int, tied: bool) -> list[str]:
    """Appends `new_rows` mean-initialised rows to embed_tokens (and lm_head unless tied); returns the grown names."""
    grown = []
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        if key not in state_dict or (tied and key == "lm_head.weight"):
            continue
        weight = state_dict[key]
        mean = weight.float().mean(0, keepdim=True).to(weight.dtype)
        state_dict[key] = torch.cat([weight, mean.expand(new_rows, -1)], dim=0)
        grown.append(key)
    return grown


def source_dtype(state_dict) -> torch.dtype:
    """The floating dtype holding most of the source's elements (float32 when none)."""
    counts: dict[torch.dtype, int] = {}
    for tensor in state_dict.values():
        if tensor.is_floating_point():
            counts[tensor.dtype] = counts.get(tensor.dtype, 0) + tensor.numel()
    return max(counts, key=counts.get) if counts else torch.float32


def build_model(config: LlavaVRConfig, state_dict, dtype: torch.dtype) -> LlavaVRForConditionalGeneration:
    """LLaVA-VR with the source tensors loaded and everything else initialised by the model's own init."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report lists the new keys; the command prints its own summary
    try:
        model, info = LlavaVRForConditionalGeneration.from_pretrained(
            None, config=config, state_dict=state_dict, dtype=dtype, output_loading_info=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    if info["unexpected_keys"] or info["mismatched_keys"] or info["error_msgs"]:
        raise LlavaVRRefusal(f"weights did not load cleanly: {info}")
    return model.eval()
