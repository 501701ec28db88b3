# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The model card of an `llava-vr sft` output folder (TRL's own card names no base model and shows a text-generation
pipeline): `image-text-to-text`, the model it was fine-tuned from, the data, what trained at which learning rate.

    card = render_sft_card(trainer, model_name="stage2", base_model="lmms-lab/...", source="ckpt/llava-vr-0.5b")
    card.save("runs/stage2/README.md")

`base_model` goes into the metadata only when it is a Hub id; the usage code shows `hub_model_id`, or `OWNER/NAME`
until the folder is published (`llava-vr push --repo-id` fills it in).
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

from huggingface_hub import ModelCard

from ..hub.card import card_data, card_metadata, template_path
from ..hub.ids import REPO_PLACEHOLDER, is_hub_id

SFT_TEMPLATE = "llava_vr_sft.md"  # in llava_vr/hub/templates/
FRAMEWORKS = ("llava-vr", "trl", "transformers", "torch", "datasets", "peft")


def names_hub_model(name) -> bool:
    """A Hub id (`llava_vr.hub.ids.is_hub_id`) that is not also an existing local path."""
    return bool(name) and is_hub_id(name) and not os.path.exists(str(name))


def source_metadata(model_name_or_path: str | None) -> dict:
    """`base_model` and `license` for a fine-tune of `model_name_or_path`: a Hub id is its own base model; a local
    folder gives what its own card declares (a converted checkpoint's card names its source); `{}` when unknown."""
    if not model_name_or_path:
        return {}
    if names_hub_model(model_name_or_path):
        return {"base_model": model_name_or_path}
    data = card_metadata(model_name_or_path) if os.path.isdir(model_name_or_path) else {}
    if not data:  # no README, or one without (valid) metadata
        return {}
    base = data.get("base_model")
    base = base[0] if isinstance(base, list) and len(base) == 1 else base
    return {
        "base_model": base if isinstance(base, str) and names_hub_model(base) else None,
        "license": data.get("license"),
    }


def framework_versions() -> list[tuple[str, str]]:
    versions = []
    for name in FRAMEWORKS:
        try:
            versions.append((name, version(name)))
        except PackageNotFoundError:
            pass
    return versions


def training_summary(trainer) -> dict:
    """The card's training table, from the trainer's arguments, state, learning rates and PEFT config."""
    args, state = trainer.args, trainer.state
    rates = trainer.component_learning_rates or {"all trainable parameters": args.learning_rate}
    peft_config = getattr(trainer.model, "peft_config", {}).get("default")
    if peft_config is not None:
        saved = ", ".join(peft_config.modules_to_save or []) or "nothing else"
        method = (
            f"LoRA (r={peft_config.r}, alpha={peft_config.lora_alpha}) on the LLM's linear layers; fully "
            f"trained: {saved}"
        )
    else:
        method = "full fine-tuning of " + ", ".join(rates)
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    processes = trainer.accelerator.num_processes
    return dict(
        method=method,
        learning_rates=", ".join(f"{name} {rate:g}" for name, rate in rates.items())
        + f" ({getattr(args.lr_scheduler_type, 'value', args.lr_scheduler_type)} schedule)",
        steps=state.global_step,
        epochs=f"{state.epoch or 0:.3g}",
        batch=f"batch {args.per_device_train_batch_size} per device x {processes} process(es) x "
        f"{args.gradient_accumulation_steps} accumulation",
        precision="bf16 autocast" if args.bf16 else "fp16 autocast" if args.fp16 else "float32",
        max_length=args.max_length,
        final_loss=f"{losses[-1]:.4g}" if losses else None,
    )


def origin_text(base_model: str | None, source: str | None) -> str:
    """Markdown naming what was fine-tuned: the `--model` path or id given, and the Hub base model it derives from."""
    link = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else None
    if source and source != base_model:
        return f"`{source}`" + (f" (based on {link})" if link else "")
    return link or "a LLaVA-VR checkpoint"


def render_sft_card(
    trainer,
    *,
    model_name: str,
    base_model: str | None = None,
    source: str | None = None,
    dataset_name: str | None = None,
    data: str = "its training data",
    license: str | None = None,
    origin: str | None = None,
) -> ModelCard:
    """The card of a fine-tuned folder: `base_model` (a Hub id) in the metadata and the text, `source` (the
    `--model` given, when it is not that Hub id) in the text, or `origin` (words, e.g. for a random model);
    `dataset_name` (a Hub dataset) or `data` (words); `license` (the base model's, when known)."""
    base_model = base_model if names_hub_model(base_model) else None
    card = card_data(
        base_model, license=license, datasets=[dataset_name] if dataset_name else None, extra_tags=("sft",)
    )
    return ModelCard.from_template(
        card,
        template_path=str(template_path(SFT_TEMPLATE)),
        model_name=model_name,
        model_id=trainer.args.hub_model_id or REPO_PLACEHOLDER,
        origin=origin or origin_text(base_model, source),
        dataset_name=dataset_name,
        data=data,
        frameworks=framework_versions(),
        **training_summary(trainer),
    )


__all__ = ["names_hub_model", "render_sft_card", "source_metadata", "training_summary"]
