# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Fine-tuning LLaVA-VR with TRL's `SFTTrainer`: which parts train, per-component learning rates, LoRA, merging.

Not one of the model's remote-code files (nothing under `modeling_*` imports it); it needs the `train` extra
(`trl`, `peft`, `datasets`, `accelerate`).

Components of a `LlavaVRForConditionalGeneration` (parameter names as in a saved checkpoint):

| component         | parameters                                                                  |
|-------------------|-----------------------------------------------------------------------------|
| `vision_tower`    | `model.vision_tower.*`                                                      |
| `projector`       | `model.multi_modal_projector.*` and `model.image_newline`                   |
| `vision_remember` | `model.language_model.vision_remember.<layer>.*`                            |
| `llm`             | `model.language_model.*` except `vision_remember` (embeddings, layers, norm)|
| `lm_head`         | `lm_head.weight`                                                            |

The paper's two stages (`STAGES`): stage 1 trains the projector and VR (lr 1e-3) on image-caption pairs without
AnyRes; stage 2 adds the LLM and its head (lr 2e-5) with AnyRes. "Without AnyRes" = `vision_aspect_ratio="pad"` on
both the model config and the processor (`set_base_tile_only` / `base_tile_only`): each image becomes its base tile
only, `g*g` tokens + one newline, which the model and the processor count with the same `anyres_layout`.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable, Mapping

from torch import nn

COMPONENTS = ("vision_tower", "projector", "vision_remember", "llm", "lm_head")
STAGES = {
    "stage1": ("projector", "vision_remember"),
    "stage2": ("projector", "vision_remember", "llm", "lm_head"),
}
# Paper settings: stage 1 lr 1e-3 (projector + VR), stage 2 lr 2e-5 (everything that trains). AdamW, cosine.
STAGE_LEARNING_RATES = {"stage1": 1e-3, "stage2": 2e-5}

# Segments that wrappers insert into parameter names: FSDP1 (`_fsdp_wrapped_module`), activation checkpointing
# (`_checkpoint_wrapped_module`), torch.compile (`_orig_mod`), DDP / DeepSpeed (`module` prefix), PEFT (`base_model.model`
# prefix, `modules_to_save.<adapter>` / `original_module` / `base_layer` / `lora_A.<adapter>` inside). Components are
# recognised by the segments that remain (`vision_remember`, `vision_tower`, ...), so all of these map correctly.
_WRAPPER_SEGMENTS = {"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"}

# LoRA targets: the Qwen2 decoder layers' linear layers only. A plain `["q_proj", "v_proj"]` would also hit the vision
# tower's attention and VR's cross-attention projections (`vision_remember.N.cross_attention.q_proj`).
LLM_LORA_TARGET_PATTERN = (
    r"(?:.*\.)?language_model\.layers\.\d+\.(?:self_attn\.(?:q_proj|k_proj|v_proj|o_proj)|mlp\.(?:gate_proj|up_proj|down_proj))"
)


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


def _check_components(components: Iterable[str]) -> tuple[str, ...]:
    components = (components,) if isinstance(components, str) else tuple(components)
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; choose among {list(COMPONENTS)}")
    return components


def set_trainable(model: nn.Module, components: Iterable[str] | str) -> dict[str, dict[str, int]]:
    """Makes exactly the parameters of `components` trainable (`requires_grad`) and freezes every other one.

    `components` is a subset of `COMPONENTS` or a stage name of `STAGES`. A tied parameter (the LM head tied to the
    input embeddings) trains if any of its names' components does. Raises if a parameter belongs to no component.

    Returns, per component, `{"trainable": n, "total": m}` counted in elements (tied parameters counted once, under
    their first name).
    """
    if isinstance(components, str) and components in STAGES:
        components = STAGES[components]
    wanted = set(_check_components(components))
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


def trainable_components(model: nn.Module) -> dict[str, dict[str, int]]:
    """Like `set_trainable`'s return value, for the model's current `requires_grad` flags (changes nothing)."""
    counts = {component: {"trainable": 0, "total": 0} for component in COMPONENTS}
    for name, param in model.named_parameters():
        component = component_of(name)
        if component is None:
            continue
        counts[component]["total"] += param.numel()
        counts[component]["trainable"] += param.numel() if param.requires_grad else 0
    return counts


def component_parameter_groups(
    model: nn.Module,
    learning_rates: Mapping[str, float],
    weight_decay: float = 0.0,
    default_learning_rate: float | None = None,
    decay_parameter_names: Iterable[str] | None = None,
) -> list[dict]:
    """Optimizer parameter groups, one per component (and weight-decay / no-decay), with that component's lr.

    Built from `model.named_parameters()` as the model is when the optimizer is created, so it works on a model that
    is wrapped or sharded by then (FSDP1 with `use_orig_params`, FSDP2 `DTensor`s, DeepSpeed ZeRO-3 partitioned
    parameters, PEFT): only the trainable parameters are taken, as `Trainer.create_optimizer` does.

    Args:
        learning_rates: lr per component (`COMPONENTS`); components not listed use `default_learning_rate`.
        weight_decay: applied to the parameters in `decay_parameter_names` (`Trainer.get_decay_parameter_names`:
            no decay on biases and norms); with `decay_parameter_names=None`, to every parameter that is not a bias,
            a 1-D norm weight or `image_newline`.
    Returns:
        `[{"params": [...], "lr": ..., "weight_decay": ..., "component": ...}, ...]`, empty groups dropped; FSDP2
        parameters on different device meshes are split into separate groups (as `Trainer.create_optimizer` does).
    """
    _check_components(learning_rates)
    decay = set(decay_parameter_names) if decay_parameter_names is not None else None
    grouped: dict[tuple[str, bool], list] = defaultdict(list)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        component = component_of(name)
        if component is None:
            raise ValueError(f"trainable parameter {name!r} belongs to no LLaVA-VR component")
        if component not in learning_rates and default_learning_rate is None:
            raise ValueError(f"trainable parameter {name!r}: no learning rate for its component {component!r}")
        if decay is not None:
            decays = name in decay
        else:
            decays = param.ndim > 1 and not name.endswith("image_newline")
        grouped[(component, decays)].append(param)

    groups = []
    for component in COMPONENTS:
        for decays in (True, False):
            params = grouped.get((component, decays))
            if not params:
                continue
            groups.append(
                {
                    "params": params,
                    "lr": float(learning_rates.get(component, default_learning_rate)),
                    "weight_decay": weight_decay if decays else 0.0,
                    "component": component,
                }
            )
    return _split_groups_by_device_mesh(groups)


def _split_groups_by_device_mesh(groups: list[dict]) -> list[dict]:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return groups
    meshes = {p.device_mesh if isinstance(p, DTensor) else None for g in groups for p in g["params"]}
    if len(meshes) <= 1:
        return groups
    split = []
    for group in groups:
        by_mesh = defaultdict(list)
        for p in group["params"]:
            by_mesh[p.device_mesh if isinstance(p, DTensor) else None].append(p)
        split.extend({**group, "params": params} for params in by_mesh.values())
    return split


def stage_learning_rates(stage: str, **overrides: float | None) -> dict[str, float]:
    """Per-component lrs of a paper stage (`STAGE_LEARNING_RATES` for the stage's components), with `overrides`
    (`projector=1e-4`, `llm=...`; `None` values ignored) on top."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose among {list(STAGES)}")
    rates = {component: STAGE_LEARNING_RATES[stage] for component in STAGES[stage]}
    rates.update({k: v for k, v in overrides.items() if v is not None})
    _check_components(rates)
    return rates


try:  # trl is in the `train` extra; without it the helpers of this module still work, the trainer does not
    from trl import SFTTrainer as _SFTTrainer
except ImportError:  # pragma: no cover
    _SFTTrainer = object


class LlavaVRSFTTrainer(_SFTTrainer):
    """`trl.SFTTrainer` with per-component learning rates (`component_learning_rates`).

    `create_optimizer` builds the parameter groups of `component_parameter_groups` from the model it is given (the
    FSDP1-wrapped model when Trainer delays optimizer creation, the unsharded model before FSDP2 / DeepSpeed prepare
    it; accelerate then swaps FSDP2's sharded parameters into the same groups), with the optimizer class and
    arguments of `args.optim` (AdamW by default), and the lr scheduler scales every group. Components not listed use
    `args.learning_rate`. Without `component_learning_rates` it is plain `SFTTrainer`.

    DeepSpeed: a DeepSpeed config with an `"optimizer"` block makes Trainer use DeepSpeed's optimizer and never call
    `create_optimizer`, so the per-component lrs would be silently dropped: that combination is refused here; keep
    the optimizer out of the DeepSpeed config (as in `examples/accelerate/*.json`).
    """

    def __init__(self, *args, component_learning_rates: Mapping[str, float] | None = None, **kwargs):
        self.component_learning_rates = dict(component_learning_rates or {})
        _check_components(self.component_learning_rates)
        super().__init__(*args, **kwargs)
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        ds_config = getattr(plugin, "deepspeed_config", None) or {}
        if self.component_learning_rates and "optimizer" in ds_config:
            raise ValueError(
                "the DeepSpeed config has an 'optimizer' block, which bypasses Trainer.create_optimizer and so the "
                "per-component learning rates: remove the 'optimizer' block (Trainer then builds AdamW itself)"
            )

    def create_optimizer(self, model=None):
        if not self.component_learning_rates:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            groups = component_parameter_groups(
                opt_model,
                self.component_learning_rates,
                weight_decay=self.args.weight_decay,
                default_learning_rate=self.args.learning_rate,
                decay_parameter_names=self.get_decay_parameter_names(opt_model),
            )
            if self.optimizer_cls_and_kwargs is not None:
                optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
            else:
                optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            optimizer_kwargs = dict(optimizer_kwargs)
            special = {"params", "model", "optimizer_dict"} & set(optimizer_kwargs)
            if special:
                raise ValueError(
                    f"optim={self.args.optim!r} builds its own parameter groups ({sorted(special)}), which cannot be "
                    "combined with component_learning_rates"
                )
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer


def _llava_vr_config(model_or_config):
    config = getattr(model_or_config, "config", model_or_config)
    if not hasattr(config, "vision_remember_layers"):
        raise TypeError(f"expected a LLaVA-VR model or config, got {type(model_or_config).__name__}")
    return config


def lora_config_for(
    model_or_config,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    train_vision_remember: bool = True,
    train_projector: bool = True,
    **lora_kwargs,
):
    """A `peft.LoraConfig` for LLaVA-VR: LoRA on the LLM's decoder linear layers only, VR and projector fully trained.

    - `target_modules` is a regex (`LLM_LORA_TARGET_PATTERN`) matching `q/k/v/o_proj` and `gate/up/down_proj` of
      `language_model.layers.N` only: not the vision tower, not VR's own projections.
    - `modules_to_save` lists the VR modules by their real names (`vision_remember.1`, `vision_remember.4`, from the
      config's `vision_remember_layers`) and `multi_modal_projector`: PEFT matches them by name suffix, and a
      ModuleDict name or a class name would raise or match nothing.
    - `image_newline` (a bare `nn.Parameter`, used only for AnyRes crop rows) stays frozen: PEFT can only save
      modules, not bare parameters, so an adapter could not carry it. Train it in a full fine-tune (stage 1) instead.

    Verify the result after `get_peft_model` / `SFTTrainer(peft_config=...)` with `check_lora_trainable`.
    """
    from peft import LoraConfig

    config = _llava_vr_config(model_or_config)
    modules_to_save = []
    if train_vision_remember:
        modules_to_save += [f"vision_remember.{layer}" for layer in config.vision_remember_layers]
    if train_projector:
        modules_to_save.append("multi_modal_projector")
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=LLM_LORA_TARGET_PATTERN,
        modules_to_save=modules_to_save or None,
        task_type="CAUSAL_LM",
        **lora_kwargs,
    )


def check_lora_trainable(peft_model, train_vision_remember: bool = True, train_projector: bool = True) -> dict:
    """Checks a LoRA-wrapped LLaVA-VR: LoRA weights trainable (on LLM layers only), VR / projector copies trainable
    (if asked), vision tower and base LLM weights frozen. Raises `AssertionError` naming the first offender.

    Returns `{"lora": n, "vision_remember": n, "projector": n, "frozen": n}` in elements.
    """
    summary = {"lora": 0, "vision_remember": 0, "projector": 0, "frozen": 0}
    saw_lora = False
    for name, param in peft_model.named_parameters():
        component = component_of(name)
        is_lora = ".lora_" in name
        is_saved_copy = ".modules_to_save." in name
        if is_lora:
            saw_lora = True
            assert component == "llm", f"LoRA outside the LLM decoder: {name}"
            assert param.requires_grad, f"LoRA weight frozen: {name}"
            summary["lora"] += param.numel()
        elif is_saved_copy:
            assert param.requires_grad, f"modules_to_save copy frozen: {name}"
            summary[component] += param.numel()
        else:
            if component == "vision_remember" and train_vision_remember or component == "projector" and (
                train_projector and not name.endswith("image_newline")
            ):
                assert ".original_module." in name, f"{name} is not wrapped by modules_to_save"
            assert not param.requires_grad, f"base weight trainable: {name}"
            summary["frozen"] += param.numel()
    assert saw_lora, "no LoRA weight in the model"
    if train_vision_remember:
        assert summary["vision_remember"] > 0 or not _llava_vr_config(peft_model).vision_remember_layers, "VR frozen"
    if train_projector:
        assert summary["projector"] > 0, "projector frozen"
    return summary


def merge_and_save(peft_model, output_dir, processor=None, **save_kwargs):
    """Merges the LoRA weights into the base weights (`merge_and_unload`, which also puts the trained
    modules-to-save copies in place of the originals) and saves a plain LLaVA-VR checkpoint: safetensors, config with
    `auto_map`, the model's code files (loads with `trust_remote_code=True`), and `processor` if given.

    Returns the merged `LlavaVRForConditionalGeneration`. The PEFT wrapper must not be used afterwards.
    """
    merged = peft_model.merge_and_unload()
    # TRL's fused-LM-head patch is an instance attribute over the class forward: drop it from the saved model
    if "forward" in vars(merged):
        del merged.forward
    merged.save_pretrained(output_dir, **save_kwargs)
    if processor is not None:
        processor.save_pretrained(output_dir)
    return merged


# ---- stage 1 without AnyRes ---------------------------------------------------------------------------------------


def image_settings(model, processor=None) -> dict:
    """The settings that decide how many tokens an image becomes, on the model config and on the processor."""
    config = _llava_vr_config(model)
    state = {"config.vision_aspect_ratio": config.vision_aspect_ratio}
    if processor is not None:
        if hasattr(processor, "vision_aspect_ratio"):
            state["processor.vision_aspect_ratio"] = processor.vision_aspect_ratio
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is not None and hasattr(image_processor, "image_grid_pinpoints"):
            state["image_processor.image_grid_pinpoints"] = image_processor.image_grid_pinpoints
    return state


def restore_image_settings(model, processor, state: dict) -> None:
    """Puts back what `image_settings` recorded (e.g. after a stage-1 run, before saving)."""
    config = _llava_vr_config(model)
    config.vision_aspect_ratio = state["config.vision_aspect_ratio"]
    if "processor.vision_aspect_ratio" in state:
        processor.vision_aspect_ratio = state["processor.vision_aspect_ratio"]
    if "image_processor.image_grid_pinpoints" in state:
        processor.image_processor.image_grid_pinpoints = state["image_processor.image_grid_pinpoints"]


def set_base_tile_only(model, processor) -> dict:
    """Stage 1's "no AnyRes": every image becomes its base tile only (`g*g` tokens + one newline).

    Sets `vision_aspect_ratio="pad"` on the model config and on the processor (so both count `g*g + 1` tokens per
    image), and gives the image processor the single pinpoint `[[tile, tile]]` so it stops cutting AnyRes crops the
    model would not read (it still emits one crop after the base tile; the model takes the base tile of each image's
    `pixel_values`). Returns the previous settings for `restore_image_settings`.
    """
    state = image_settings(model, processor)
    config = _llava_vr_config(model)
    config.vision_aspect_ratio = "pad"
    if processor is not None:
        if not hasattr(processor, "vision_aspect_ratio"):
            raise ValueError(f"{type(processor).__name__} has no vision_aspect_ratio: cannot switch AnyRes off")
        processor.vision_aspect_ratio = "pad"
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is not None and hasattr(image_processor, "image_grid_pinpoints"):
            tile = config.vision_config.image_size
            image_processor.image_grid_pinpoints = [[tile, tile]]
    return state


@contextlib.contextmanager
def base_tile_only(model, processor):
    """`set_base_tile_only` within the block, the previous settings restored after it."""
    state = set_base_tile_only(model, processor)
    try:
        yield
    finally:
        restore_image_settings(model, processor, state)


__all__ = [
    "COMPONENTS",
    "LLM_LORA_TARGET_PATTERN",
    "LlavaVRSFTTrainer",
    "STAGES",
    "STAGE_LEARNING_RATES",
    "check_lora_trainable",
    "component_of",
    "component_parameter_groups",
    "lora_config_for",
    "merge_and_save",
    "base_tile_only",
    "image_settings",
    "restore_image_settings",
    "set_base_tile_only",
    "set_trainable",
    "stage_learning_rates",
    "trainable_components",
]
