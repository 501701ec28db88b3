# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""What a source checkpoint is: its folder (`resolve.py`), config and tensor shapes read (`sources.py`), its kind and
layout detected.

Recognised (see `detect`): Transformers `LlavaNextForConditionalGeneration` / `LlavaOnevisionForConditionalGeneration`
in the current or the llava-hf layout, and LLaVA-NeXT-repo (lmms-lab) `LlavaQwenForCausalLM` checkpoints
(`lmms_lab.detect_lmms_lab`).
"""

from __future__ import annotations

import json

from ..hub.refusals import LlavaVRRefusal
from .lmms_lab import detect_lmms_lab
from .resolve import resolve_source
from .sources import Source, list_weight_files, stored_tensors

TRANSFORMERS_KINDS = {
    "llava_next": ("llava_next", "LlavaNextForConditionalGeneration"),
    "llava_onevision": ("llava_onevision", "LlavaOnevisionForConditionalGeneration"),
}
EXPECTED = (
    "expected a Transformers LlavaNextForConditionalGeneration or LlavaOnevisionForConditionalGeneration checkpoint "
    "or an lmms-lab LLaVA-NeXT checkpoint (LlavaQwenForCausalLM)"
)


def load_source(source: str) -> Source:
    """The source's config, weight files and tensor shapes (no tensor data read), detected."""
    path, source_id = resolve_source(source)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise LlavaVRRefusal(f"no config.json in {path}")
    try:
        raw_config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise LlavaVRRefusal(f"{config_file} is not valid JSON ({error})") from None
    files = list_weight_files(path)
    src = Source(path, source_id, raw_config, files, {t.key: t.shape for t in stored_tensors(files)})
    detect(src)
    return src


def detect(src: Source) -> None:
    """Sets `kind`, `layout` and `description` from config.json and the tensor names, or refuses."""
    config, keys = src.raw_config, src.keys
    architectures = config.get("architectures") or []
    model_type = config.get("model_type", "")
    if model_type == "llava_vr":
        raise LlavaVRRefusal(
            f"{src.path} is already a LLaVA-VR checkpoint (model_type 'llava_vr'): nothing to convert; load it with "
            "trust_remote_code=True, fine-tune it (`llava-vr sft`) or publish it (`llava-vr push`)"
        )
    for kind, (type_name, arch) in TRANSFORMERS_KINDS.items():
        if model_type == type_name or arch in architectures:
            src.kind = kind
            if any(k.startswith(("model.language_model.", "model.vision_tower.")) for k in keys):
                src.layout, layout = "transformers", "current layout: model.language_model.*"
            elif any(k.startswith(("language_model.", "vision_tower.")) for k in keys):
                src.layout, layout = "llava-hf", "llava-hf Hub layout: language_model.model.*"
            else:
                raise LlavaVRRefusal(f"{src.path} has a {arch} config but no LLaVA weight names (e.g. {keys[:1]})")
            src.description = f"Transformers {arch} checkpoint ({layout})"
            return
    if detect_lmms_lab(src):
        return
    what = ", ".join(architectures) or f"model_type={model_type!r}"
    raise LlavaVRRefusal(f"{src.path} holds a {what} checkpoint; {EXPECTED}")
