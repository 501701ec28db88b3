# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""LoRA for LLaVA-VR: adapters on the LLM's decoder linear layers, Vision Remember and projector trained fully; check
and merge."""

from __future__ import annotations

import contextlib
import warnings

from .components import component_of, llava_vr_config

# LoRA targets: the Qwen2 decoder layers' linear layers only. A plain `["q_proj", "v_proj"]` would also hit the vision
# tower's attention and VR's cross-attention projections (`vision_remember.N.cross_attention.q_proj`).
LLM_LORA_TARGET_PATTERN = (
    r"(?:.*\.)?language_model\.layers\.\d+\."
    r"(?:self_attn\.(?:q_proj|k_proj|v_proj|o_proj)|mlp\.(?:gate_proj|up_proj|down_proj))"
)


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

    config = llava_vr_config(model_or_config)
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


def _expects_saved_copy(name: str, component: str | None, train_vision_remember: bool, train_projector: bool) -> bool:
    if component == "vision_remember":
        return train_vision_remember
    return component == "projector" and train_projector and not name.endswith("image_newline")


def check_lora_trainable(peft_model, train_vision_remember: bool = True, train_projector: bool = True) -> dict:
    """Checks a LoRA-wrapped LLaVA-VR: LoRA weights trainable (on LLM layers only), VR / projector copies trainable
    (if asked), vision tower and base LLM weights frozen. Raises `AssertionError` naming the first offender.

    Returns `{"lora": n, "vision_remember": n, "projector": n, "frozen": n}` in elements.
    """
    summary = {"lora": 0, "vision_remember": 0, "projector": 0, "frozen": 0}
    saw_lora = False
    for name, param in peft_model.named_parameters():
        component = component_of(name)
        if ".lora_" in name:
            saw_lora = True
            assert component == "llm", f"LoRA outside the LLM decoder: {name}"
            assert param.requires_grad, f"LoRA weight frozen: {name}"
            summary["lora"] += param.numel()
        elif ".modules_to_save." in name:
            assert param.requires_grad, f"modules_to_save copy frozen: {name}"
            summary[component] += param.numel()
        else:
            if _expects_saved_copy(name, component, train_vision_remember, train_projector):
                assert ".original_module." in name, f"{name} is not wrapped by modules_to_save"
            assert not param.requires_grad, f"base weight trainable: {name}"
            summary["frozen"] += param.numel()
    assert saw_lora, "no LoRA weight in the model"
    if train_vision_remember:
        assert summary["vision_remember"] > 0 or not llava_vr_config(peft_model).vision_remember_layers, "VR frozen"
    if train_projector:
        assert summary["projector"] > 0, "projector frozen"
    return summary


def restore_saved_module_dtypes(peft_model) -> int:
    """Puts the trained copies of `modules_to_save` (VR, projector) back in their original module's dtype.

    TRL's `SFTTrainer` casts every trainable parameter of a quantized (QLoRA) model to bfloat16, as the QLoRA paper
    does for adapters; a LoRA layer casts its input to its own dtype, but a fully trained copy of VR or the projector
    in bf16 between float32 neighbours fails ("mat1 and mat2 must have the same dtype"). Returns how many copies
    were cast."""
    from peft.utils.other import ModulesToSaveWrapper

    cast = 0
    for wrapper in peft_model.modules():
        if not isinstance(wrapper, ModulesToSaveWrapper):
            continue
        dtype = next((p.dtype for p in wrapper.original_module.parameters() if p.is_floating_point()), None)
        for copy in wrapper.modules_to_save.values():
            if dtype is not None and any(p.dtype != dtype for p in copy.parameters() if p.is_floating_point()):
                copy.to(dtype)
                cast += 1
    return cast


@contextlib.contextmanager
def peft_checkpointing_probe_quiet():
    """Hides one FutureWarning no user can act on: PEFT (0.21) probes `model.is_gradient_checkpointing`, which
    Transformers (5.23) deprecated for `is_activation_checkpointing`, whenever it wraps a model. Nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def stored_dtype(config):
    """The dtype a checkpoint's weights were saved in (`config.dtype`; float32 when the config does not say)."""
    import torch

    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def merge_adapter_into_base(base, adapter, output_dir, processor=None, revision=None):
    """Merges the LoRA adapter saved in `adapter` into the checkpoint `base` and saves the result to `output_dir`: the
    one merge of `llava-vr sft` (after a `--lora` run into `OUTPUT_DIR/merged`, and `--merge_adapter`).

    The base is loaded in float32 whatever the run trained in (bf16, or 4-/8-bit for QLoRA), the adapter merged
    there, and the merged weights saved in the base checkpoint's own dtype: the merged checkpoint gives the logits of
    `PeftModel.from_pretrained(base, adapter)` on the same base, up to that dtype's rounding (exactly, for a float32
    base). Returns the merged model."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(
        base, trust_remote_code=True, revision=revision, dtype=torch.float32
    )
    dtype = stored_dtype(AutoConfig.from_pretrained(base, trust_remote_code=True, revision=revision))
    with peft_checkpointing_probe_quiet():
        peft_model = PeftModel.from_pretrained(model, adapter)
    return merge_and_save(peft_model, output_dir, processor, dtype=dtype)


def merge_and_save(peft_model, output_dir, processor=None, dtype=None, **save_kwargs):
    """Merges the LoRA weights into the base weights (`merge_and_unload`, which also puts the trained
    modules-to-save copies in place of the originals) and saves a plain LLaVA-VR checkpoint: safetensors, config with
    `auto_map`, the model's code files (loads with `trust_remote_code=True`), and `processor` if given.

    `dtype`: cast the merged model to it before saving (default: as merged). Returns the merged
    `LlavaVRForConditionalGeneration`. The PEFT wrapper must not be used afterwards.
    """
    merged = peft_model.merge_and_unload()
    # TRL's fused-LM-head patch is an instance attribute over the class forward: drop it from the saved model
    if "forward" in vars(merged):
        del merged.forward
    if dtype is not None:
        merged.to(dtype)
    merged.save_pretrained(output_dir, **save_kwargs)
    if processor is not None:
        processor.save_pretrained(output_dir)
    return merged


__all__ = [
    "LLM_LORA_TARGET_PATTERN",
    "check_lora_trainable",
    "lora_config_for",
    "merge_adapter_into_base",
    "merge_and_save",
    "restore_saved_module_dtypes",
    "stored_dtype",
]
