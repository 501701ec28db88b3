# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Fine-tuning LLaVA-VR with TRL's `SFTTrainer`: which parts train, per-component learning rates, LoRA, merging.

Not part of the model's remote-code files; needs the `train` extra (`trl`, `peft`, `datasets`, `accelerate`).

- `components`: `COMPONENTS`, the paper's `STAGES` and their learning rates, `set_trainable`, `component_learning_rates`
- `optimizer`: `component_parameter_groups` (one optimizer group per component)
- `trainer`: `LlavaVRSFTTrainer` (`SFTTrainer` with `component_learning_rates`)
- `lora`: `lora_config_for`, `check_lora_trainable`, `merge_and_save`
- `image_settings`: stage 1 without AnyRes (`base_tile_only`, `set_base_tile_only`, `restore_image_settings`)
- `model_card`: the output folder's card (`render_sft_card`: image-text-to-text, base model, what trained)
- `preflight`: checks before a run (`LlavaVRRefusal`: unconverted checkpoints, launches that cannot shard)
- `sft_cli`: the `llava-vr sft` command (`main`), on TRL's `TrlParser`
"""

from .components import (
    COMPONENTS,
    LORA_LEARNING_RATE,
    STAGE_LEARNING_RATES,
    STAGES,
    component_learning_rates,
    component_of,
    set_trainable,
    trained_components,
)
from .image_settings import base_tile_only, image_settings, restore_image_settings, set_base_tile_only
from .lora import LLM_LORA_TARGET_PATTERN, check_lora_trainable, lora_config_for, merge_and_save
from .optimizer import component_parameter_groups
from .trainer import LlavaVRSFTTrainer

__all__ = [
    "COMPONENTS",
    "LLM_LORA_TARGET_PATTERN",
    "LORA_LEARNING_RATE",
    "LlavaVRSFTTrainer",
    "STAGES",
    "STAGE_LEARNING_RATES",
    "base_tile_only",
    "check_lora_trainable",
    "component_learning_rates",
    "component_of",
    "component_parameter_groups",
    "image_settings",
    "lora_config_for",
    "merge_and_save",
    "restore_image_settings",
    "set_base_tile_only",
    "set_trainable",
    "trained_components",
]
