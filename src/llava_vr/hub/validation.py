# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Checks that a folder is a loadable LLaVA-VR `trust_remote_code` folder with safetensors weights only.

config.json with `model_type` `llava_vr` and an `auto_map` for AutoConfig / AutoModel / AutoModelForImageTextToText,
the code files those entries (and the processor's AutoProcessor entry) name plus their relative imports, and readable
safetensors shards among the files a push uploads (`selection.py`: pickled weights are refused there).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from transformers.dynamic_module_utils import get_relative_import_files

from .refusals import LlavaVRRefusal, one_line
from .selection import Selection, select_upload

REQUIRED_AUTO_MAP = ("AutoConfig", "AutoModel", "AutoModelForImageTextToText")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise LlavaVRRefusal(f"cannot read {path.name} ({one_line(error)})") from None


def module_file(reference: str) -> str:
    """`"modeling_llava_vr.LlavaVRModel"` (or `"repo--modeling_llava_vr.LlavaVRModel"`) -> `"modeling_llava_vr.py"`."""
    return reference.split("--")[-1].rsplit(".", 1)[0] + ".py"


def code_files(folder: Path, roots: set[str]) -> set[str]:
    """The code files `roots` need, their relative imports followed as Transformers does; refuses a missing one."""
    needed = set()
    for root in sorted(roots):
        try:  # opens each file, so a missing root or import raises FileNotFoundError
            needed |= {root, *(Path(f).name for f in get_relative_import_files(folder / root))}
        except FileNotFoundError as error:
            name = Path(error.filename).name
            raise LlavaVRRefusal(f"{folder} lacks the code file {name} that trust_remote_code loading needs") from None
    return needed


def check_safetensors(path: Path) -> None:
    """Refuses a file `safetensors` cannot open (bad header, truncated data)."""
    try:
        with safe_open(path, framework="pt"):
            pass
    except Exception as error:
        raise LlavaVRRefusal(f"{path.name} is not a readable safetensors file ({one_line(error)})") from None


def code_roots(folder: Path, config: dict) -> set[str]:
    """The code files config.json's and the processor's `auto_map` name; refuses a missing entry."""
    auto_map = config.get("auto_map") or {}
    missing = [name for name in REQUIRED_AUTO_MAP if name not in auto_map]
    if missing:
        raise LlavaVRRefusal(
            f"{folder}/config.json's auto_map lacks {', '.join(missing)} (save with LLaVA-VR's save_pretrained)"
        )
    processor_map = next(
        (
            m
            for f in PROCESSOR_FILES
            if (folder / f).is_file() and "AutoProcessor" in (m := read_json(folder / f).get("auto_map") or {})
        ),
        None,
    )
    if processor_map is None:
        raise LlavaVRRefusal(
            f"{folder} has no processor with an AutoProcessor auto_map (save the LlavaVRProcessor too)"
        )
    return {module_file(auto_map[name]) for name in REQUIRED_AUTO_MAP} | {module_file(processor_map["AutoProcessor"])}


def check_model_folder(folder: Path) -> None:
    """Refuses what is not a model folder, naming what it is instead (missing, a LoRA adapter, no config.json)."""
    if not folder.is_dir():
        raise LlavaVRRefusal(f"{folder} is not a folder" if folder.exists() else f"{folder} does not exist")
    if not (folder / "config.json").is_file():
        if (folder / "adapter_config.json").is_file():
            merged = folder / "merged"
            hint = (
                f"publish {merged} instead"
                if (merged / "config.json").is_file()
                else "merge it first (`llava-vr sft --merge_adapter ADAPTER --model BASE --output_dir DIR`) and "
                "publish DIR"
            )
            raise LlavaVRRefusal(f"{folder} holds a LoRA adapter, not a full LLaVA-VR model: {hint}")
        raise LlavaVRRefusal(f"{folder} has no config.json (not a saved model folder)")


def validate_folder(folder: Path, selection: Selection | None = None) -> dict:
    """Refuses anything but a loadable LLaVA-VR trust_remote_code folder with safetensors weights among the files a
    push uploads (`selection`, default `select_upload(folder)`); returns config.json's content."""
    folder = Path(folder)
    check_model_folder(folder)
    selection = selection or select_upload(folder)
    files = [name for name, _ in selection.files]
    config = read_json(folder / "config.json")
    if config.get("model_type") != "llava_vr":
        raise LlavaVRRefusal(
            f"{folder}/config.json has model_type {config.get('model_type')!r}, not 'llava_vr'"
            + (
                ": convert it first (`llava-vr convert --source ... --output ...`)"
                if config.get("model_type") in ("llava_next", "llava_onevision")
                else ""
            )
        )
    code_files(folder, code_roots(folder, config))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index)["weight_map"].values()))
    else:
        shards = [name for name in files if name.endswith(".safetensors")]
    if not shards:
        raise LlavaVRRefusal(f"{folder} has no safetensors weights")
    for shard in shards:
        if not (folder / shard).is_file():
            raise LlavaVRRefusal(f"{folder} lacks the weight shard {shard}")
        check_safetensors(folder / shard)
    return config
