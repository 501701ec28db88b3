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
stderr. The command line is in `push_options.py`.
"""

from __future__ import annotations

from pathlib import Path

from .ids import is_hub_id
from .push_options import parse_args
from .refusals import LlavaVRRefusal, one_line, run_command
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
    print(
        f"Dry run: would create {visibility} model repo {repo_id} (if missing) and upload {len(files)} files "
        f"({format_size(total)}) from {folder}:"
    )
    width = max(len(name) for name, _ in files)
    for name, size in files:
        print(f"  {name:<{width}}  {size:>12,} bytes  ({format_size(size)})")
    print("--- README.md (model card) ---")
    print(card.rstrip())
    print("--- end of model card; nothing was uploaded ---")


def upload(
    folder: Path, repo_id: str, files: list[tuple[str, int]], card: str, private: bool, commit_message: str
) -> str:
    """`create_repo(exist_ok=True)` + one commit of `files` (README.md = `card`); returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, create_commit, create_repo  # at call time: tests replace them

    operations = [CommitOperationAdd(name, folder / name) for name, _ in files if name != "README.md"]
    operations.append(CommitOperationAdd("README.md", card.encode("utf-8")))
    try:
        url = create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        print(
            f"Uploading {len(operations)} files ({format_size(sum(size for _, size in files))}) to {url} ...",
            flush=True,
        )
        info = create_commit(repo_id, operations, commit_message=commit_message, repo_type="model")
    except Exception as error:
        raise LlavaVRRefusal(f"upload to {repo_id} failed: {one_line(error)}") from None
    return info.commit_url


def push_folder(
    folder,
    repo_id: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    commit_message: str | None = None,
    base_model: str | None = None,
) -> str | None:
    """Checks `folder`, prepares its card, then uploads its model files (or, with `dry_run`, prints what would
    upload). Returns the commit URL."""
    folder = Path(folder).expanduser().resolve()
    for flag, value in (("--repo-id", repo_id), ("--base-model", base_model)):
        if value is not None and not is_hub_id(value):
            raise LlavaVRRefusal(f"{flag} {value!r}: expected a Hub id OWNER/NAME")
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


def main(argv: list[str] | None = None) -> int:
    """`llava-vr push`: 0 when done, 2 on a refusal, 1 on an unexpected error, 130 when interrupted (one line on
    stderr each; `--debug` raises instead)."""
    args = parse_args(argv)
    return run_command(
        lambda: push_folder(
            args.folder,
            args.repo_id,
            private=args.private,
            dry_run=args.dry_run,
            commit_message=args.commit_message,
            base_model=args.base_model,
        ),
        debug=args.debug,
        catch_errors=True,
    )
