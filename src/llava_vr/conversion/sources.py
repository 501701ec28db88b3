# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Source checkpoints: the folder (`resolve.py`), its weight files listed and streamed, what it holds detected.

Recognised (see `detect`): Transformers `LlavaNextForConditionalGeneration` / `LlavaOnevisionForConditionalGeneration`
in the current or the llava-hf layout, and LLaVA-NeXT-repo (lmms-lab) `LlavaQwenForCausalLM` checkpoints.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from .errors import ConversionError
from .layouts import rename_key
from .lmms_lab import detect_lmms_lab
from .resolve import resolve_source

TRANSFORMERS_KINDS = {
    "llava_next": ("llava_next", "LlavaNextForConditionalGeneration"),
    "llava_onevision": ("llava_onevision", "LlavaOnevisionForConditionalGeneration"),
}
EXPECTED = (
    "expected a Transformers LlavaNextForConditionalGeneration or LlavaOnevisionForConditionalGeneration checkpoint "
    "or an lmms-lab LLaVA-NeXT checkpoint (LlavaQwenForCausalLM)"
)


@dataclass
class Source:
    path: Path
    source_id: str | None  # the source's Hub id (the card's `base_model`), None for a local folder of unknown origin
    raw_config: dict
    weight_files: list[Path]
    shapes: dict[str, tuple]  # tensor name as stored -> shape
    kind: str = ""  # "llava_next" | "llava_onevision" | "lmms_lab"
    layout: str = ""  # "transformers" | "llava-hf" | "lmms-lab"
    description: str = ""

    @property
    def keys(self) -> list[str]:
        """Tensor names as stored."""
        return list(self.shapes)


@dataclass
class StoredTensor:
    """One tensor of a weight file: its name and shape (header only) and a loader for its data."""

    key: str
    shape: tuple
    load: Callable[[], torch.Tensor]


def stored_tensors(files: list[Path]) -> Iterator[StoredTensor]:
    """Every tensor of `files` (safetensors, or pickles read with `torch.load(weights_only=True, mmap=True)`).
    Call `load()` before advancing: a safetensors file is open only while its tensors are being yielded."""
    for file in files:
        if file.suffix == ".safetensors":
            with safe_open(file, framework="pt") as handle:
                for key in handle.keys():
                    yield StoredTensor(key, tuple(handle.get_slice(key).get_shape()), partial(handle.get_tensor, key))
        else:
            for key, tensor in torch.load(file, map_location="cpu", weights_only=True, mmap=True).items():
                yield StoredTensor(key, tuple(tensor.shape), lambda tensor=tensor: tensor)


def list_weight_files(path: Path) -> list[Path]:
    """The shards an index names, else every `*.safetensors`, else the pickles (`.bin`, `.pt`, `.pth`)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise ConversionError(f"{index.name} names shards that are not in {path}: {', '.join(missing[:3])}")
        return [path / n for n in names]
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
    if pickles:
        return pickles
    raise ConversionError(f"no weights (*.safetensors or pytorch_model*.bin) in {path}")


def load_source(source: str) -> Source:
    """The source's config, weight files and tensor shapes (no tensor data read), detected."""
    path, source_id = resolve_source(source)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"no config.json in {path}")
    try:
        raw_config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ConversionError(f"{config_file} is not valid JSON ({error})") from None
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
        raise ConversionError(
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
                raise ConversionError(f"{src.path} has a {arch} config but no LLaVA weight names (e.g. {keys[:1]})")
            src.description = f"Transformers {arch} checkpoint ({layout})"
            return
    if detect_lmms_lab(src):
        return
    what = ", ".join(architectures) or f"model_type={model_type!r}"
    raise ConversionError(f"{src.path} holds a {what} checkpoint; {EXPECTED}")


def read_state_dict(src: Source) -> OrderedDict[str, torch.Tensor]:
    """All source tensors under LLaVA-VR names (progress bar per tensor)."""
    renamed = {key: rename_key(key, src.layout) for key in src.keys}  # refuses unknown names before reading
    state_dict: OrderedDict[str, torch.Tensor] = OrderedDict()
    with tqdm(total=len(renamed), desc="Reading and renaming tensors", unit="tensor") as bar:
        for stored in stored_tensors(src.weight_files):
            if renamed[stored.key] is not None:
                state_dict[renamed[stored.key]] = stored.load()
            bar.update()
    return state_dict
