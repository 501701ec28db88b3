# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The model card a push uploads, and the base model it names.

* the folder's README.md is one of our cards (a conversion's): completed for the repo (`card.complete_card`:
  `model_id`, `base_model`);
* no README.md, or another tool's card (TRL's training card): a generated LLaVA-VR card naming the repo and the base
  model.

The folder itself is never modified. The base model is `--base-model`, else the first Hub id found in the folder's
card metadata / config `_name_or_path`, following local paths (a fine-tuned folder's base is often a local converted
folder, whose own card names the Hub model it came from).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..configuration_llava_vr import LlavaVRConfig
from .card import card_metadata, complete_card, is_llava_vr_card, render_generic_card, source_card_metadata
from .ids import is_hub_id

MAX_HOPS = 4


def base_model_candidates(folder: Path) -> list[tuple[str, str]]:
    """(value, where) from the folder's card `base_model` and config.json `_name_or_path`."""
    candidates = []
    base = card_metadata(folder, strict=True).get("base_model")
    for value in base if isinstance(base, list) else [base]:
        if value:
            candidates.append((str(value), f"{folder}/README.md"))
    try:
        name_or_path = json.loads((folder / "config.json").read_text()).get("_name_or_path")
    except (OSError, json.JSONDecodeError):
        name_or_path = None
    if name_or_path:
        candidates.append((str(name_or_path), f"{folder}/config.json _name_or_path"))
    return candidates


def local_folder(value: str, relative_to: Path) -> Path | None:
    """`value` as an existing local folder (absolute, from the working directory, or beside `relative_to`)."""
    for path in (Path(value).expanduser(), relative_to.parent / value):
        if path.is_dir():
            return path.resolve()
    return None


def resolve_base_model(folder: Path, explicit: str | None = None) -> tuple[str | None, str]:
    """(the base model's Hub id or None, where it was found)."""
    if explicit:
        return explicit, "--base-model"
    seen = {folder.resolve()}
    current = folder
    for _ in range(MAX_HOPS):
        following = None
        for value, where in base_model_candidates(current):
            path = local_folder(value, current)
            if path is not None:
                following = following or (path if path not in seen else None)
            elif is_hub_id(value):
                return value, where
        if following is None:
            return None, ""
        seen.add(following)
        current = following
    return None, ""


def card_for_upload(folder: Path, repo_id: str, base_model: str | None = None) -> tuple[str, list[str]]:
    """(README.md text to upload, messages saying where the card and its base model came from)."""
    base, where = resolve_base_model(folder, base_model)
    data = card_metadata(folder, strict=True)
    messages = []
    if data and is_llava_vr_card(data):
        text, changes = complete_card((folder / "README.md").read_text(encoding="utf-8"), repo_id, base)
        if changes:
            messages.append(
                f"model card: README.md completed for the upload ({'; '.join(changes)}); the folder's copy is unchanged"
            )
    else:
        metadata = source_card_metadata(folder) if data else {}
        card = render_generic_card(
            LlavaVRConfig.from_pretrained(folder),
            repo_id=repo_id,
            base_model=base,
            license=metadata.get("license") or "apache-2.0",
            datasets=metadata.get("datasets"),
        )
        text = str(card).rstrip("\n") + "\n"
        messages.append(
            "model card: README.md is not a LLaVA-VR card (e.g. TRL's training card): uploading a generated LLaVA-VR "
            "card as README.md instead; the folder's copy is unchanged"
            if (folder / "README.md").is_file()
            else "model card: the folder has no README.md: uploading a generated LLaVA-VR card"
        )
    if base:
        messages.append(f"base_model: {base} (from {where})")
    else:
        messages.append(
            "base_model: unknown (no Hub id in the folder's card or config): pass --base-model OWNER/NAME "
            "to name the model this one comes from"
        )
    return text, messages
