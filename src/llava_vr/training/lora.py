# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""LoRA for LLaVA-VR: adapters on the LLM's decoder linear layers, Vision Remember and projector trained fully; check
and merge."""

from __future__ import annotations

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


__all__ = ["LLM_LORA_TARGET_PATTERN", "check_lora_trainable", "lora_config_for", "merge_and_save"]
