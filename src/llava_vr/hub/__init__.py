# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The floor under `llava_vr.conversion` and `llava_vr.training` (both import it; it imports neither):

refusals.py      `LlavaVRRefusal`, the one refusal type, and `run_command`: refusal -> one `error:` line, exit 2
ids.py           `is_hub_id` (the one check of `OWNER/NAME`), `REPO_PLACEHOLDER`
card.py          model cards from the templates in `templates/` (converted, fine-tuned, experiment), and
                 `card_metadata`, the one reader of a README's card metadata
push.py          `llava-vr push` (command line in `push_options.py`): the files it uploads (`selection.py`), its
                 checks (`validation.py`), the card it uploads (`upload_card.py`)
"""

from .card import (
    architecture_kwargs,
    card_data,
    card_metadata,
    complete_card,
    render_card,
    render_generic_card,
    render_model_card,
    source_card_metadata,
    template_path,
)
from .ids import REPO_PLACEHOLDER, is_hub_id
from .push import main, push_folder
from .refusals import LlavaVRRefusal, one_line, run_command
from .selection import Selection, select_upload
from .upload_card import card_for_upload, resolve_base_model
from .validation import validate_folder

__all__ = [
    "LlavaVRRefusal",
    "REPO_PLACEHOLDER",
    "Selection",
    "architecture_kwargs",
    "card_data",
    "card_for_upload",
    "card_metadata",
    "complete_card",
    "is_hub_id",
    "main",
    "one_line",
    "push_folder",
    "render_card",
    "render_generic_card",
    "render_model_card",
    "resolve_base_model",
    "run_command",
    "select_upload",
    "source_card_metadata",
    "template_path",
    "validate_folder",
]
