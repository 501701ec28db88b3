# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Hub repo ids: the one check of `OWNER/NAME`, and the placeholder a card shows until its repo is known."""

from __future__ import annotations

import re

from huggingface_hub.utils import HFValidationError, validate_repo_id

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
"""`OWNER/NAME` (a model repo id always names its owner)."""

REPO_PLACEHOLDER = "OWNER/NAME"
"""The usage code's repo id in a card rendered before the repo is known (`llava-vr push --repo-id` replaces it)."""


def is_hub_id(text) -> bool:
    """`OWNER/NAME` as the Hub accepts it (`huggingface_hub`'s `validate_repo_id`: no `--` / `..`, at most 96
    characters, ...) and not written as a path (`./x`, `/x`, `~/x`). Says nothing about whether the repo exists, or a
    local folder of that name."""
    text = str(text or "")
    if text.startswith((".", "/", "~")) or not HUB_ID.match(text):
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


__all__ = ["HUB_ID", "REPO_PLACEHOLDER", "is_hub_id"]
