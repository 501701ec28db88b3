# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Model cards (`card.py`, templates in `templates/`) and publishing to the Hub (`push.py`: `llava-vr push`; the
files it uploads in `selection.py`, its checks in `validation.py`, the card it uploads in `upload_card.py`)."""

from .card import (
    architecture_kwargs,
    card_data,
    complete_card,
    render_card,
    render_generic_card,
    render_model_card,
    source_card_metadata,
    template_path,
)
from .push import main, push_folder
from .selection import Selection, select_upload
from .upload_card import card_for_upload, resolve_base_model
from .validation import validate_folder

__all__ = [
    "Selection",
    "architecture_kwargs",
    "card_data",
    "card_for_upload",
    "complete_card",
    "main",
    "push_folder",
    "render_card",
    "render_generic_card",
    "render_model_card",
    "resolve_base_model",
    "select_upload",
    "source_card_metadata",
    "template_path",
    "validate_folder",
]
