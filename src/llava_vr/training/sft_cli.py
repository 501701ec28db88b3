# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
r"""`llava-vr sft`: fine-tune LLaVA-VR on document question answering with TRL's `SFTTrainer` (full or LoRA).

Every option of TRL's `SFTConfig` and `ModelConfig` works (`--max_steps`, `--bf16`, `--eval_strategy steps`,
`--resume_from_checkpoint DIR`, `--push_to_hub`, `--config run.yaml`, ...; `--max-steps` spellings too), plus the
project's own (`LlavaVRSFTOptions`, `llava-vr sft --help`):

Data (one of): the offline synthetic documents of `llava_vr.data.synthetic_documents` (default: receipts, tables,
charts, digit grids); `--dataset NAME_OR_PATH` (a `datasets` dataset with TRL's `messages` and `images` columns);
`--jsonl FILE --image_root DIR` (one `{image, question, answer}` object per line; no `image`: text only);
`--llava_data FILE --image_root DIR` (LLaVA's conversation JSON / JSONL: multi-turn, text-only rows too).

Model: `--model PATH` (= `--model_name_or_path`, a LLaVA-VR checkpoint folder or Hub id, loaded with
`trust_remote_code=True`), or `--tiny` for a tiny random model and processor built offline (smoke runs).

Stages (paper): `--stage stage1` trains projector + Vision Remember at lr 1e-3 without AnyRes (model and processor
set to `vision_aspect_ratio="pad"`: each image is its base tile + one newline); `--stage stage2` adds the LLM and LM
head at lr 2e-5 with AnyRes. `--lora` (= `--use_peft`, stage 2) trains LoRA on the LLM's decoder linear layers plus
the full VR modules and projector; `image_newline` stays frozen then. `--load_in_4bit` / `--load_in_8bit` with
`--lora`: QLoRA on a base quantized by bitsandbytes while loading. Per-component lrs: `--projector_lr`,
`--vision_remember_lr`, `--llm_lr`, `--vision_tower_lr`. Loss on the assistant replies only
(`assistant_only_loss=True`); `--max_length` defaults to the largest image's tokens + 1024.

Examples:
  llava-vr sft --tiny --output_dir runs/sft-tiny
  llava-vr sft --model ckpt/llava-vr-qwen2-0.5b --stage stage2 --bf16 --activation_checkpointing \
      --max_steps -1 --num_train_epochs 1 --num_samples 20000 --output_dir runs/sft-docs
  accelerate launch --config_file examples/accelerate/fsdp.yaml -m llava_vr sft \
      --model ckpt/llava-vr-qwen2-0.5b --stage stage2 --bf16 --max_steps -1 --output_dir runs/sft-docs
"""

from __future__ import annotations

import os
import sys

from ..hub.refusals import run_command
from .components import component_learning_rates, set_trainable, trained_components
from .image_settings import restore_image_settings, set_base_tile_only
from .lora import check_lora_trainable, lora_config_for, merge_adapter_into_base, merge_and_save
from .model_card import names_hub_model, source_metadata
from .preflight import (
    LlavaVRRefusal,
    accelerator_available,
    check_checkpoint,
    check_hub_push,
    check_launch,
    check_launch_before_parsing,
    check_quantized_loading,
    check_sharding,
    check_transformers_supports_training,
)
from .sft_data import load_documents, load_eval_documents
from .sft_options import SFT_DEFAULTS, parse_args
from .trainer import LlavaVRSFTTrainer


def log(message):
    """Prints on the first process only (the command runs once per process under `accelerate launch`)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(message, flush=True)


def tiny_model_and_processor(seed: int = 0):
    """A tiny random LLaVA-VR (CLIP 56-px tiles, 5-layer Qwen2, VR before layers 1 and 4) with a matching
    LLaVA-OneVision processor and the tiny tokenizer of `llava_vr.testing_utils`."""
    from llava_vr.testing_utils import build_tiny_tokenizer, tiny_config, tiny_model, tiny_processor, tiny_text_config

    tokenizer = build_tiny_tokenizer()
    special = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    config = tiny_config(
        text_config={**tiny_text_config(vocab_size=len(tokenizer)), **special},
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    return tiny_model(config, seed=seed), tiny_processor(config, kind="onevision")


def load_model_and_processor(model_args, training_args, options):
    """`--tiny`'s model, or `--model` loaded with `trust_remote_code=True` in `--dtype` (default: float32, bfloat16
    for a LoRA base under `--bf16`: full fine-tuning keeps fp32 master weights and bf16 is autocast)."""
    if options.tiny:
        return tiny_model_and_processor(training_args.seed)
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    dtype = model_args.dtype or ("bfloat16" if training_args.bf16 and model_args.use_peft else "float32")
    kwargs = {
        "trust_remote_code": True,
        "revision": model_args.model_revision,
        "dtype": dtype if dtype == "auto" else getattr(torch, dtype),
    }
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.load_in_4bit or model_args.load_in_8bit:  # QLoRA: TRL's BitsAndBytesConfig of the options
        from trl import get_quantization_config

        kwargs["quantization_config"] = get_quantization_config(model_args)
    model = AutoModelForImageTextToText.from_pretrained(model_args.model_name_or_path, **kwargs)
    processor = AutoProcessor.from_pretrained(
        model_args.model_name_or_path, trust_remote_code=True, revision=model_args.model_revision
    )
    return model, processor


def default_max_length(config, images_per_sample: int = 1, text_tokens: int = 1024) -> int:
    """Tokens of the largest image the config can produce (an image shaped like the largest-area pinpoint) times
    `images_per_sample`, plus `text_tokens`: TRL's default 1024 is smaller than one 9-tile image."""
    from llava_vr.packing_llava_vr import anyres_layout

    tile = config.vision_config.image_size
    per_image = max(
        anyres_layout(
            pinpoint, config.image_grid_pinpoints, tile, config.token_grid_size, config.vision_aspect_ratio
        ).num_tokens
        for pinpoint in config.image_grid_pinpoints
    )
    return per_image * images_per_sample + text_tokens


def merge_adapter(model_args, training_args, options) -> None:
    """`--merge_adapter DIR`: merges a saved LoRA adapter into `--model` and saves it to `--output_dir`, which must be
    new or empty (`merge_adapter_into_base`: float32 merge, saved in the base checkpoint's dtype)."""
    from transformers import AutoProcessor

    output_dir = training_args.output_dir
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        raise LlavaVRRefusal(
            f"--output_dir {output_dir} exists and is not empty: give a new folder for the merged "
            "checkpoint (nothing was written)"
        )
    if not os.path.isfile(os.path.join(options.merge_adapter, "adapter_config.json")):
        raise LlavaVRRefusal(
            f"--merge_adapter {options.merge_adapter} has no adapter_config.json: give the output folder "
            "of a `llava-vr sft --lora` run"
        )
    base, revision = model_args.model_name_or_path, model_args.model_revision
    processor = AutoProcessor.from_pretrained(base, trust_remote_code=True, revision=revision)
    merged = merge_adapter_into_base(base, options.merge_adapter, output_dir, processor, revision)
    print(f"merged {options.merge_adapter} into {type(merged).__name__} ({merged.dtype}), saved to {output_dir}")


def learning_rates(training_args, model_args, options) -> dict[str, float]:
    """lr per trained component (`component_learning_rates` of the stage with the command line's overrides)."""
    lora = model_args.use_peft
    return component_learning_rates(
        options.stage,
        trained_components(options.stage, options.train_vision_tower, lora),
        learning_rate=training_args.learning_rate,
        lora=lora,
        projector=options.projector_lr,
        vision_remember=options.vision_remember_lr,
        llm=options.llm_lr,
        vision_tower=options.vision_tower_lr,
    )


def choose_trainable(model, model_args, components):
    """A `LoraConfig` for a LoRA run (PEFT then freezes all but adapters and `modules_to_save`), else `None` after
    `set_trainable(model, components)`."""
    if model_args.use_peft:
        return lora_config_for(
            model,
            r=model_args.lora_r,
            alpha=model_args.lora_alpha,
            dropout=model_args.lora_dropout,
            train_vision_remember="vision_remember" in components,
            train_projector="projector" in components,
            use_rslora=model_args.use_rslora,
            use_dora=model_args.use_dora,
        )
    counts = set_trainable(model, components)
    log("trainable parameters: " + ", ".join(f"{c} {n['trainable']:,}/{n['total']:,}" for c, n in counts.items()))
    return None


def card_details(model_args, options) -> dict:
    """What the output folder's model card says about the run's origin (`LlavaVRSFTTrainer(model_card=...)`)."""
    source = model_args.model_name_or_path
    metadata = source_metadata(source)
    if options.dataset:
        data = f"the dataset `{options.dataset}`"
    elif options.jsonl:
        data = f"`{os.path.basename(options.jsonl)}` (image, question, answer lines)"
    elif options.llava_data:
        data = f"`{os.path.basename(options.llava_data)}` (LLaVA conversations)"
    else:
        data = "offline synthetic documents (`llava_vr.data.synthetic_documents`)"
    dataset_name = options.dataset if names_hub_model(options.dataset) else None
    return dict(
        base_model=options.base_model or metadata.get("base_model"),
        source=source,
        data=data,
        dataset_name=dataset_name,
        license=metadata.get("license"),
        origin="a tiny random LLaVA-VR (a smoke run)" if options.tiny else None,
    )


def build_trainer(training_args, model_args, options, model, processor, datasets) -> LlavaVRSFTTrainer:
    """The trainer of a run on `datasets` (train, eval or None): trainable parts, per-component lrs (the largest one
    is `args.learning_rate`, which the scheduler logs), `max_length` from the model config unless given."""
    rates = learning_rates(training_args, model_args, options)
    peft_config = choose_trainable(model, model_args, tuple(rates))
    training_args.learning_rate = max(rates.values())
    if training_args.max_length is None:
        training_args.max_length = default_max_length(model.config)
    trainer = LlavaVRSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=datasets[0],
        eval_dataset=datasets[1],
        processing_class=processor,
        peft_config=peft_config,
        component_learning_rates=rates,
        model_card=card_details(model_args, options),
    )
    if model_args.use_peft:
        summary = check_lora_trainable(
            trainer.model, train_vision_remember="vision_remember" in rates, train_projector="projector" in rates
        )
        log(f"LoRA run, trainable: {summary}")
    log(
        f"learning rates per component: {rates}; max_length {training_args.max_length}; "
        f"AnyRes {'on' if options.anyres else 'off'}"
    )
    return trainer


def save_merged(trainer, model_args, training_args, processor) -> None:
    """After a LoRA run: the merged checkpoint in `OUTPUT_DIR/merged` (single process), or how to make it."""
    output_dir = training_args.output_dir
    if trainer.accelerator.num_processes > 1 or trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        log(
            "merge the adapter on one process: llava-vr sft "
            f"--merge_adapter {output_dir} --model {model_args.model_name_or_path or 'BASE_CHECKPOINT'} "
            f"--output_dir {output_dir}/merged"
        )
        return
    merged = os.path.join(output_dir, "merged")
    if model_args.model_name_or_path:  # the base as saved, not as trained (bf16, 4-/8-bit): as --merge_adapter does
        merge_adapter_into_base(model_args.model_name_or_path, output_dir, merged, processor, model_args.model_revision)
    else:  # --tiny: the float32 base exists only in memory
        merge_and_save(trainer.model, merged, processor)
    trainer.write_model_card(merged)
    log(f"merged checkpoint: {merged}")


def load_datasets(training_args, options):
    """(train, eval or None), checked before any model loads (a JSONL's every line and image: `LlavaVRRefusal`)."""
    num_threads = training_args.dataset_num_proc
    train = load_documents(options, training_args.seed, num_threads)
    evaluate = training_args.eval_strategy != "no"
    return train, load_eval_documents(options, training_args.seed, num_threads) if evaluate else None


def run(training_args, model_args, options) -> LlavaVRSFTTrainer | None:
    """Checks the launch, the checkpoint and the data, trains, and saves weights (or adapter) + config + code files +
    processor + model card at the top of `--output_dir` (pushed with `--push_to_hub`); returns the trainer (`None`
    for `--merge_adapter`). Refusals raise `LlavaVRRefusal` before anything is loaded or written."""
    if model_args.model_name_or_path:
        check_checkpoint(model_args.model_name_or_path, model_args.model_revision)
    if options.merge_adapter:
        return merge_adapter(model_args, training_args, options)
    check_launch(training_args)
    check_quantized_loading(model_args)
    check_hub_push(training_args)
    datasets = load_datasets(training_args, options)
    if training_args.bf16 and not accelerator_available():
        log("no GPU: --bf16 runs as bfloat16 autocast on the CPU (use_cpu); drop --bf16 to train in float32")
    model, processor = load_model_and_processor(model_args, training_args, options)
    # stage 1 "no AnyRes": model and processor both use vision_aspect_ratio="pad" (base tile + newline per image)
    saved_image_settings = None if options.anyres else set_base_tile_only(model, processor)
    trainer = build_trainer(training_args, model_args, options, model, processor, datasets)
    check_sharding(trainer)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    # the final save gets the checkpoint's AnyRes settings back (checkpoints during a stage-1 run keep "pad", right for
    # resuming that run)
    if saved_image_settings is not None:
        restore_image_settings(model, processor, saved_image_settings)
    trainer.save_model(training_args.output_dir)
    trainer.create_model_card()
    if model_args.use_peft and options.merge:
        save_merged(trainer, model_args, training_args, processor)
    return trainer


def main(argv: list[str] | None = None) -> int:
    """`llava-vr sft ...`: 0 when trained; 2 for bad options (from the parser) and for a run refused before it
    starts (bad data, an unconverted checkpoint, a launch that cannot shard), with the reason on stderr."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # an FSDP / DeepSpeed launch on a machine without GPU: refused by each process before its options are parsed
    status = run_command(check_transformers_supports_training) or run_command(
        lambda: check_launch_before_parsing(argv, SFT_DEFAULTS["output_dir"])
    )
    if status:
        return status
    args = parse_args(argv, description=__doc__)
    return run_command(lambda: run(*args))


__all__ = ["default_max_length", "load_model_and_processor", "main", "run", "tiny_model_and_processor"]
