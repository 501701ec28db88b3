# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Which files of a folder a push uploads: the model's own files, never a training run's state.

Uploaded (top level only): weights (`*.safetensors` + index), configs, processor / tokenizer files, chat template,
remote code (`*.py`), README / license / notes. Skipped and reported: subfolders (`checkpoint-*/`, `runs/`, ...),
the Trainer's state (`training_args.bin`, `optimizer.pt`, `scheduler.pt`, `rng_state*.pth`, `trainer_state.json`,
`*_results.json`, TensorBoard events) and any other file. Pickled weights at the top level are refused, all named at
once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub.utils import filter_repo_objects
from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS

from .refusals import LlavaVRRefusal

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")
"""Weight formats a published folder must not hold (safetensors only)."""

MODEL_FILES = [
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    "*.py",
    "README.md",
    "LICENSE*",
    "NOTICE*",
    "*.md",
]
TRAINING_STATE = [
    "training_args.bin",
    "optimizer.pt",
    "optimizer.bin",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*.pth",
    "trainer_state.json",
    "*_results.json",
    "events.out.tfevents.*",
]


@dataclass
class Selection:
    files: list[tuple[str, int]]  # (name, size) uploaded, sorted
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> names (a folder as `name/ (N files)`)

    def describe_skipped(self) -> list[str]:
        """One line per reason: `not uploaded (training state): training_args.bin, checkpoint-2/ (9 files)`."""
        return [f"not uploaded ({reason}): {', '.join(names)}" for reason, names in self.skipped.items()]


def select_upload(folder: Path) -> Selection:
    """The files of `folder` a push uploads and those it leaves out (with the reason); refuses pickled weights."""
    selection = Selection([])
    entries = [p.name for p in sorted(folder.iterdir())]
    kept = set(filter_repo_objects(entries, ignore_patterns=list(DEFAULT_IGNORE_PATTERNS)))
    pickles = []
    for name in entries:
        path = folder / name
        if name not in kept:
            continue
        if path.is_dir():
            count = sum(1 for p in path.rglob("*") if p.is_file())
            reason = "intermediate Trainer checkpoints" if name.startswith("checkpoint-") else "subfolders"
            selection.skipped.setdefault(reason, []).append(f"{name}/ ({count} files)")
        elif any(fnmatch(name, pattern) for pattern in TRAINING_STATE):
            selection.skipped.setdefault("training state and logs", []).append(name)
        elif name.endswith(PICKLE_SUFFIXES):
            pickles.append(name)
        elif any(fnmatch(name, pattern) for pattern in MODEL_FILES):
            selection.files.append((name, path.stat().st_size))
        else:
            selection.skipped.setdefault("not a model file", []).append(name)
    if pickles:
        raise LlavaVRRefusal(
            f"{folder} holds pickle-format files (only safetensors are published): {', '.join(pickles)}; re-save the "
            "model with save_pretrained (safetensors) or delete them"
        )
    return selection
