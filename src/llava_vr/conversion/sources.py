# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Source checkpoints: `Source` (what a source is, filled in by `detect.load_source`), its weight files listed and
streamed, its tensors read under LLaVA-VR names.
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

from ..hub.refusals import LlavaVRRefusal
from .layouts import rename_key


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
            raise LlavaVRRefusal(f"{index.name} names shards that are not in {path}: {', '.join(missing[:3])}")
        return [path / n for n in names]
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
    if pickles:
        return pickles
    raise LlavaVRRefusal(f"no weights (*.safetensors or pytorch_model*.bin) in {path}")


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
