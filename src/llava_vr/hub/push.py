# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Publish a LLaVA-VR folder (converted or fine-tuned) to the Hugging Face Hub.

    llava-vr push FOLDER --repo-id OWNER/NAME [--private] [--dry-run] [--commit-message MSG]

The folder is checked first (`validation.validate_folder`: a loadable `trust_remote_code` LLaVA-VR folder with
safetensors weights only). A folder without README.md gets a generated model card first.

`--dry-run` prints the exact files (with sizes) `upload_folder` would send and the model card, validates the card's
YAML locally, and contacts nothing (`upload_folder` itself has no dry run: it calls the Hub to validate the card).
Otherwise `create_repo(exist_ok=True)` + `upload_folder`. Refusals exit with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from huggingface_hub import ModelCard

from ..configuration_llava_vr import LlavaVRConfig
from ..conversion.errors import HUB_ID, ConversionError, one_line
from .card import render_generic_card
from .validation import upload_files, validate_folder


def ensure_card(folder: Path, repo_id: str) -> str:
    """README.md's text; a folder without one gets a generated card (written into the folder, so it uploads)."""
    readme = folder / "README.md"
    if not readme.is_file():
        render_generic_card(LlavaVRConfig.from_pretrained(folder), repo_id=repo_id).save(readme)
        print(f"{folder} had no README.md: wrote a generated model card")
    text = readme.read_text(encoding="utf-8")
    try:
        data = ModelCard(text, ignore_metadata_errors=False).data.to_dict()
    except Exception as error:
        raise ConversionError(f"README.md's YAML metadata is invalid ({one_line(error)})") from None
    if not data:
        raise ConversionError("README.md has no YAML metadata block")
    return text


def format_size(size: float) -> str:
    """`1234567` -> `"1.2 MB"` (decimal units)."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000


def print_dry_run(folder: Path, repo_id: str, files: list[tuple[str, int]], card: str, visibility: str) -> None:
    """The files `upload_folder` would send, with sizes, and the card."""
    total = sum(size for _, size in files)
    print(f"Dry run: would create {visibility} model repo {repo_id} (if missing) and upload {len(files)} files "
          f"({format_size(total)}) from {folder}:")
    width = max(len(name) for name, _ in files)
    for name, size in files:
        print(f"  {name:<{width}}  {size:>12,} bytes  ({format_size(size)})")
    print("--- README.md (model card) ---")
    print(card.rstrip())
    print("--- end of model card; nothing was uploaded ---")


def push_folder(folder, repo_id: str, *, private: bool = False, dry_run: bool = False,
                commit_message: str | None = None) -> str | None:
    """Checks `folder`, then uploads it (or, with `dry_run`, prints what would upload). Returns the commit URL."""
    folder = Path(folder).expanduser().resolve()
    if not HUB_ID.match(repo_id):
        raise ConversionError(f"--repo-id {repo_id!r}: expected OWNER/NAME")
    validate_folder(folder)
    card = ensure_card(folder, repo_id)
    files = upload_files(folder)
    if dry_run:
        print_dry_run(folder, repo_id, files, card, "private" if private else "public")
        return None
    from huggingface_hub import create_repo, upload_folder  # looked up at call time: tests replace them

    try:
        url = create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        print(f"Uploading {len(files)} files ({format_size(sum(size for _, size in files))}) to {url} ...")
        info = upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model",
                             commit_message=commit_message or "Upload LLaVA-VR model")
    except Exception as error:
        raise ConversionError(f"upload to {repo_id} failed: {one_line(error)}") from None
    print(f"Uploaded: {info.commit_url}")
    return info.commit_url


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Publish a LLaVA-VR folder to the Hugging Face Hub.")
    parser.add_argument("folder", help="a converted or fine-tuned LLaVA-VR folder")
    parser.add_argument("--repo-id", required=True, help="OWNER/NAME")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--dry-run", action="store_true", help="list the files and print the card; upload nothing")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """`llava-vr push`: 0 when done, 2 on a refusal, 1 on an unexpected error (one line on stderr each)."""
    args = parse_args(argv)
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
