# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Which parts of a LLaVA-VR model train: components, the paper's stages, and their learning rates (one place).

Components of a `LlavaVRForConditionalGeneration` (parameter names as in a saved checkpoint):

| component         | parameters                                                                  |
|-------------------|-----------------------------------------------------------------------------|
| `vision_tower`    | `model.vision_tower.*`                                                      |
| `projector`       | `model.multi_modal_projector.*` and `model.image_newline`                   |
| `vision_remember` | `model.language_model.vision_remember.<layer>.*`                            |
| `llm`             | `model.language_model.*` except `vision_remember` (embeddings, layers, norm)|
| `lm_head`         | `lm_head.weight`                                                            |

The paper's two stages (`STAGES`): stage 1 trains the projector and VR (lr 1e-3) on image-caption pairs without
AnyRes; stage 2 adds the LLM and its head (lr 2e-5) with AnyRes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from torch import nn

COMPONENTS = ("vision_tower", "projector", "vision_remember", "llm", "lm_head")
STAGES = {
    "stage1": ("projector", "vision_remember"),
    "stage2": ("projector", "vision_remember", "llm", "lm_head"),
}
# Paper settings: stage 1 lr 1e-3 (projector + VR), stage 2 lr 2e-5 (everything that trains). AdamW, cosine.
STAGE_LEARNING_RATES = {"stage1": 1e-3, "stage2": 2e-5}
# A LoRA run's default lr for every trained component (adapters, VR, projector).
LORA_LEARNING_RATE = 2e-4

# Segments that wrappers insert into parameter names: FSDP1 (`_fsdp_wrapped_module`), activation checkpointing
# (`_checkpoint_wrapped_module`), torch.compile (`_orig_mod`), DDP / DeepSpeed (`module` prefix), PEFT
# (`base_model.model` prefix, `modules_to_save.<adapter>` / `original_module` / `base_layer` / `lora_A.<adapter>`
# inside). Components are recognised by the segments that remain (`vision_remember`, `vision_tower`, ...), so all of
# these map correctly.
_WRAPPER_SEGMENTS = {"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"}


def component_of(name: str) -> str | None:
    """The component (one of `COMPONENTS`) a parameter name belongs to, or `None` if it belongs to none.

    Works on plain names (`model.language_model.vision_remember.1.expand_in.weight`) and on names of wrapped models
    (FSDP1, DDP, DeepSpeed, torch.compile, PEFT).
    """
    parts = [part for part in name.split(".") if part not in _WRAPPER_SEGMENTS]
    if "vision_remember" in parts:
        return "vision_remember"
    if "vision_tower" in parts:
        return "vision_tower"
    if "multi_modal_projector" in parts or parts[-1] == "image_newline":
        return "projector"
    if "language_model" in parts:
        return "llm"
    if "lm_head" in parts:
        return "lm_head"
    return None


def check_components(components: Iterable[str] | str) -> tuple[str, ...]:
    """`components` as a tuple; raises `ValueError` on a name outside `COMPONENTS`."""
    components = (components,) if isinstance(components, str) else tuple(components)
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; choose among {list(COMPONENTS)}")
    return components


def check_stage(stage: str) -> str:
    """`stage`; raises `ValueError` unless it is one of `STAGES`."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose among {list(STAGES)}")
    return stage


def llava_vr_config(model_or_config):
    """The `LlavaVRConfig` of a model (plain or PEFT-wrapped) or the config itself; `TypeError` for anything else."""
    config = getattr(model_or_config, "config", model_or_config)
    if not hasattr(config, "vision_remember_layers"):
        raise TypeError(f"expected a LLaVA-VR model or config, got {type(model_or_config).__name__}")
    return config


def set_trainable(model: nn.Module, components: Iterable[str] | str) -> dict[str, dict[str, int]]:
    """Makes exactly the parameters of `components` trainable (`requires_grad`) and freezes every other one.

    `components` is a subset of `COMPONENTS` or a stage name of `STAGES`. A tied parameter (the LM head tied to the
    input embeddings) trains if any of its names' components does. Raises if a parameter belongs to no component.

    Returns, per component, `{"trainable": n, "total": m}` counted in elements (tied parameters counted once, under
    their first name).
    """
    if isinstance(components, str) and components in STAGES:
        components = STAGES[components]
    wanted = set(check_components(components))
    names_of = defaultdict(list)
    for name, param in model.named_parameters(remove_duplicate=False):
        names_of[param].append(name)
    unassigned = [names[0] for names in names_of.values() if all(component_of(n) is None for n in names)]
    if unassigned:
        raise ValueError(f"parameters outside every LLaVA-VR component: {unassigned[:5]}")
    counts = {component: {"trainable": 0, "total": 0} for component in COMPONENTS}
    for param, names in names_of.items():
        components_of_param = [c for c in map(component_of, names) if c is not None]
        trainable = any(c in wanted for c in components_of_param)
        param.requires_grad_(trainable)
        count = counts[components_of_param[0]]
        count["total"] += param.numel()
        count["trainable"] += param.numel() if trainable else 0
    return counts


def trained_components(stage: str, train_vision_tower: bool = False, lora: bool = False) -> tuple[str, ...]:
    """The components a run trains: the stage's, plus the tower if asked; under LoRA the LLM trains through its
    adapters (grouped under `llm`) and the LM head stays frozen."""
    components = tuple(STAGES[check_stage(stage)]) + (("vision_tower",) if train_vision_tower else ())
    return tuple(c for c in components if c != "lm_head") if lora else components


def component_learning_rates(
    stage: str,
    components: Iterable[str] | None = None,
    learning_rate: float | None = None,
    lora: bool = False,
    **overrides: float | None,
) -> dict[str, float]:
    """lr per trained component (`components`, default: the stage's).

    Every component gets `learning_rate` (default: the stage's `STAGE_LEARNING_RATES`, or `LORA_LEARNING_RATE` with
    `lora`); then `overrides` per component (`projector=1e-4`; `llm=` also sets `lm_head`; `None` values and
    components that do not train are ignored).
    """
    components = check_components(STAGES[check_stage(stage)] if components is None else components)
    default = learning_rate or (LORA_LEARNING_RATE if lora else STAGE_LEARNING_RATES[stage])
    rates = {component: default for component in components}
    if "llm" in overrides:
        overrides.setdefault("lm_head", overrides["llm"])
    check_components(overrides)
    rates.update({k: v for k, v in overrides.items() if v is not None and k in rates})
    return rates


__all__ = [
    "COMPONENTS",
    "LORA_LEARNING_RATE",
    "STAGES",
    "STAGE_LEARNING_RATES",
    "check_components",
    "check_stage",
    "component_learning_rates",
    "component_of",
    "llava_vr_config",
    "set_trainable",
    "trained_components",
]
