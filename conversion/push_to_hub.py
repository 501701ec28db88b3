#!/usr/bin/env python
# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Publish a LLaVA-VR folder (converted or fine-tuned) to the Hugging Face Hub.

    python conversion/push_to_hub.py FOLDER --repo-id OWNER/NAME [--private] [--dry-run] [--commit-message MSG]

The folder is checked first: a loadable `trust_remote_code` LLaVA-VR folder (config.json with `model_type`
`llava_vr` and an `auto_map` for AutoConfig / AutoModel / AutoModelForImageTextToText, the code files those entries
and their relative imports name, a processor with an AutoProcessor entry) holding safetensors weights only — pickle
formats (.bin, .pt, .pkl, ...) are refused. A folder without README.md gets a generated model card first.

`--dry-run` prints the exact files (with sizes) `upload_folder` would send and the model card, validates the card's
YAML locally, and contacts nothing (`upload_folder` itself has no dry run: it calls the Hub to validate the card).
Otherwise `create_repo(exist_ok=True)` + `upload_folder`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from conversion_utils import HUB_ID, PICKLE_SUFFIXES, ConversionError, one_line  # noqa: E402

REQUIRED_AUTO_MAP = ("AutoConfig", "AutoModel", "AutoModelForImageTextToText")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.(\w+)\s+import\s", re.MULTILINE)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConversionError(f"cannot read {path.name} ({one_line(error)})") from None


def module_file(reference: str) -> str:
    """`"modeling_llava_vr.LlavaVRModel"` (or `"repo--modeling_llava_vr.LlavaVRModel"`) -> `"modeling_llava_vr.py"`."""
    return reference.split("--")[-1].rsplit(".", 1)[0] + ".py"


def code_files(folder: Path, roots: set[str]) -> set[str]:
    """The code files `roots` need, following single-level relative imports; refuses a missing one."""
    needed, queue = set(), list(roots)
    while queue:
        name = queue.pop()
        if name in needed:
            continue
        path = folder / name
        if not path.is_file():
            raise ConversionError(f"{folder} lacks the code file {name} that trust_remote_code loading needs")
        needed.add(name)
        queue.extend(f"{m}.py" for m in RELATIVE_IMPORT.findall(path.read_text()))
    return needed


def upload_files(folder: Path) -> list[tuple[str, int]]:
    """The files `upload_folder` sends (its default ignore patterns applied), with sizes."""
    from huggingface_hub.utils import filter_repo_objects
    from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS

    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.glob("**/*")) if p.is_file()}
    kept = filter_repo_objects(files, ignore_patterns=list(DEFAULT_IGNORE_PATTERNS))
    return [(name, files[name].stat().st_size) for name in kept]


def safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (8-byte little-endian length, then JSON); refuses anything else."""
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 2 <= length <= min(100_000_000, path.stat().st_size - 8):
                raise ValueError("bad header length")
            header = json.loads(handle.read(length))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (OSError, ValueError) as error:
        raise ConversionError(f"{path.name} is not a readable safetensors file ({one_line(error)})") from None
    return header


def validate_folder(folder: Path) -> dict:
    """Refuses anything but a loadable LLaVA-VR trust_remote_code folder with safetensors weights; returns config."""
    if not folder.is_dir():
        raise ConversionError(f"{folder} is not a folder")
    files = [name for name, _ in upload_files(folder)]
    pickles = [name for name in files if name.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise ConversionError(f"{folder} holds pickle-format files ({', '.join(pickles[:3])}): safetensors only")
    if not (folder / "config.json").is_file():
        raise ConversionError(f"{folder} has no config.json")
    config = read_json(folder / "config.json")
    if config.get("model_type") != "llava_vr":
        raise ConversionError(f"{folder}/config.json has model_type {config.get('model_type')!r}, not 'llava_vr'")
    auto_map = config.get("auto_map") or {}
    missing = [name for name in REQUIRED_AUTO_MAP if name not in auto_map]
    if missing:
        raise ConversionError(f"{folder}/config.json's auto_map lacks {', '.join(missing)} (save with LLaVA-VR's save_pretrained)")
    roots = {module_file(auto_map[name]) for name in REQUIRED_AUTO_MAP}
    processor_map = next(
        (m for f in PROCESSOR_FILES if (folder / f).is_file() and "AutoProcessor" in (m := read_json(folder / f).get("auto_map") or {})),
        None,
    )
    if processor_map is None:
        raise ConversionError(f"{folder} has no processor with an AutoProcessor auto_map (save the LlavaVRProcessor too)")
    roots.add(module_file(processor_map["AutoProcessor"]))
    code_files(folder, roots)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index)["weight_map"].values()))
    else:
        shards = [name for name in files if name.endswith(".safetensors")]
    if not shards:
        raise ConversionError(f"{folder} has no safetensors weights")
    for shard in shards:
        if not (folder / shard).is_file():
            raise ConversionError(f"{folder} lacks the weight shard {shard}")
        safetensors_header(folder / shard)
    return config


def ensure_card(folder: Path, repo_id: str) -> str:
    """README.md's text; a folder without one gets a generated card (written into the folder, so it uploads)."""
    readme = folder / "README.md"
    if not readme.is_file():
        sys.path.insert(0, str(HERE.parent / "src"))
        from llava_vr import LlavaVRConfig
        from llava_vr_card import render_generic_card

        card = render_generic_card(LlavaVRConfig.from_pretrained(folder), repo_id=repo_id)
        card.save(readme)
        print(f"{folder} had no README.md: wrote a generated model card")
    text = readme.read_text(encoding="utf-8")
    from huggingface_hub import ModelCard

    try:
        data = ModelCard(text, ignore_metadata_errors=False).data.to_dict()
    except Exception as error:
        raise ConversionError(f"README.md's YAML metadata is invalid ({one_line(error)})") from None
    if not data:
        raise ConversionError("README.md has no YAML metadata block")
    return text


def format_size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size} B"


def push_folder(folder, repo_id: str, *, private: bool = False, dry_run: bool = False,
                commit_message: str | None = None) -> str | None:
    """Checks `folder`, then uploads it (or, with `dry_run`, prints what would upload). Returns the commit URL."""
    folder = Path(folder).expanduser().resolve()
    if not HUB_ID.match(repo_id):
        raise ConversionError(f"--repo-id {repo_id!r}: expected OWNER/NAME")
    validate_folder(folder)
    card = ensure_card(folder, repo_id)
    files = upload_files(folder)
    total = sum(size for _, size in files)
    visibility = "private" if private else "public"
    if dry_run:
        print(f"Dry run: would create {visibility} model repo {repo_id} (if missing) and upload {len(files)} files "
              f"({format_size(total)}) from {folder}:")
        width = max(len(name) for name, _ in files)
        for name, size in files:
            print(f"  {name:<{width}}  {size:>12,} bytes  ({format_size(size)})")
        print("--- README.md (model card) ---")
        print(card.rstrip())
        print("--- end of model card; nothing was uploaded ---")
        return None
    from huggingface_hub import create_repo, upload_folder

    try:
        url = create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        print(f"Uploading {len(files)} files ({format_size(total)}) to {url} ...")
        info = upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            commit_message=commit_message or "Upload LLaVA-VR model",
        )
    except ConversionError:
        raise
    except Exception as error:
        raise ConversionError(f"upload to {repo_id} failed: {one_line(error)}") from None
    print(f"Uploaded: {info.commit_url}")
    return info.commit_url


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Publish a LLaVA-VR folder to the Hugging Face Hub.")
    parser.add_argument("folder", help="a converted or fine-tuned LLaVA-VR folder")
    parser.add_argument("--repo-id", required=True, help="OWNER/NAME")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--dry-run", action="store_true", help="list the files and print the card; upload nothing")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        push_folder(args.folder, args.repo_id, private=args.private, dry_run=args.dry_run,
                    commit_message=args.commit_message)
    except ConversionError as error:
        if args.debug:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:
        if args.debug:
            raise
        print(f"error: {type(error).__name__}: {one_line(error)} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
