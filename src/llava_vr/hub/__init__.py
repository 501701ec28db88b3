# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Model cards (`card.py`, templates in `templates/`) and publishing to the Hub (`push.py`: `llava-vr push`, checks
in `validation.py`)."""

from .card import (
    architecture_kwargs,
    card_data,
    render_card,
    render_generic_card,
    render_model_card,
    source_card_metadata,
    template_path,
)
from .push import main, push_folder
from .validation import validate_folder

__all__ = [
    "architecture_kwargs",
    "card_data",
    "main",
    "push_folder",
    "render_card",
    "render_generic_card",
    "render_model_card",
    "source_card_metadata",
    "template_path",
    "validate_folder",
]
