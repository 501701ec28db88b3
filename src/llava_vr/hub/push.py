# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Publish a LLaVA-VR folder (converted or fine-tuned, e.g. an `llava-vr sft` output) to the Hugging Face Hub.

    llava-vr push FOLDER --repo-id OWNER/NAME [--base-model OWNER/NAME] [--private] [--dry-run] [--commit-message MSG]

Only the model's files are uploaded (`selection.py`: weights, configs, processor / tokenizer, remote code, card);
a training run's checkpoints, logs and Trainer state are left out and listed. The folder is checked
(`validation.validate_folder`: a loadable `trust_remote_code` LLaVA-VR folder with safetensors weights) and the card
prepared (`upload_card.py`: ours completed with the repo id and base model, else a generated one); the folder itself
is never modified.

`--dry-run` prints the exact files (with sizes) and the card, validates the card's YAML locally, and contacts
nothing. Otherwise `create_repo(exist_ok=True)` + one `create_commit`. Refusals exit with status 2 and one line on
stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..conversion.errors import HUB_ID, ConversionError, one_line
from .selection import select_upload
from .upload_card import card_for_upload
from .validation import check_model_folder, validate_folder


def format_size(size: float) -> str:
    """`1234567` -> `"1.2 MB"` (decimal units)."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000


def print_dry_run(folder: Path, repo_id: str, files: list[tuple[str, int]], card: str, visibility: str) -> None:
    """The files the push would send, with sizes, and the card."""
    total = sum(size for _, size in files)
    print(f"Dry run: would create {visibility} model repo {repo_id} (if missing) and upload {len(files)} files "
          f"({format_size(total)}) from {folder}:")
    width = max(len(name) for name, _ in files)
    for name, size in files:
        print(f"  {name:<{width}}  {size:>12,} bytes  ({format_size(size)})")
    print("--- README.md (model card) ---")
    print(card.rstrip())
    print("--- end of model card; nothing was uploaded ---")


def upload(folder: Path, repo_id: str, files: list[tuple[str, int]], card: str, private: bool,
           commit_message: str) -> str:
    """`create_repo(exist_ok=True)` + one commit of `files` (README.md = `card`); returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, create_commit, create_repo  # at call time: tests replace them

    operations = [CommitOperationAdd(name, folder / name) for name, _ in files if name != "README.md"]
    operations.append(CommitOperationAdd("README.md", card.encode("utf-8")))
    try:
        url = create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        print(f"Uploading {len(operations)} files ({format_size(sum(size for _, size in files))}) to {url} ...",
              flush=True)
        info = create_commit(repo_id, operations, commit_message=commit_message, repo_type="model")
    except Exception as error:
        raise ConversionError(f"upload to {repo_id} failed: {one_line(error)}") from None
    return info.commit_url


def push_folder(folder, repo_id: str, *, private: bool = False, dry_run: bool = False,
                commit_message: str | None = None, base_model: str | None = None) -> str | None:
    """Checks `folder`, prepares its card, then uploads its model files (or, with `dry_run`, prints what would
    upload). Returns the commit URL."""
    folder = Path(folder).expanduser().resolve()
    for flag, value in (("--repo-id", repo_id), ("--base-model", base_model)):
        if value is not None and not HUB_ID.match(value):
            raise ConversionError(f"{flag} {value!r}: expected a Hub id OWNER/NAME")
    check_model_folder(folder)
    selection = select_upload(folder)
    validate_folder(folder, selection)
    card, messages = card_for_upload(folder, repo_id, base_model)
    files = [(name, size) for name, size in selection.files if name != "README.md"]
    files.append(("README.md", len(card.encode("utf-8"))))
    for line in [*selection.describe_skipped(), *messages]:
        print(line)
    if dry_run:
        print_dry_run(folder, repo_id, sorted(files), card, "private" if private else "public")
        return None
    url = upload(folder, repo_id, files, card, private, commit_message or "Upload LLaVA-VR model")
    print(f"Uploaded: {url}")
    return url


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Publish a LLaVA-VR folder to the Hugging Face Hub.")
    parser.add_argument("folder", help="a converted or fine-tuned LLaVA-VR folder")
    parser.add_argument("--repo-id", required=True, help="OWNER/NAME")
    parser.add_argument("--base-model", metavar="OWNER/NAME",
                        help="the Hub model this one comes from, for the card (default: found in the folder's card)")
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
                    commit_message=args.commit_message, base_model=args.base_model)
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
