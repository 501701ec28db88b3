# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
r"""Fine-tune LLaVA-VR on document question answering with TRL's `SFTTrainer` (full fine-tune or LoRA).

Data (one of):
  * default: the offline synthetic documents of `llava_vr.synthetic_documents` (receipts, tables, charts, digit grids);
  * `--dataset NAME_OR_PATH`: any `datasets` dataset with TRL's vision columns `messages` and `images`
    (a Hub name or a local data folder for `load_dataset`, or a folder written by `save_to_disk`);
  * `--jsonl FILE --image-root DIR`: one JSON object per line with `image` (path under DIR), `question`, `answer`.

Model: `--model PATH` (a LLaVA-VR checkpoint folder, loaded with `trust_remote_code=True`), or `--tiny` for a tiny
random model and processor built offline (smoke runs; needs this repository's `modeling_tests/tiny_tokenizer.py`).

Stages (paper): `--stage stage1` trains projector + Vision Remember at lr 1e-3 without AnyRes (model and processor
set to `vision_aspect_ratio="pad"`: each image is its base tile + one newline); `--stage stage2` adds the LLM and LM
head at lr 2e-5 with AnyRes. `--lora` (stage 2) trains LoRA on the LLM's decoder linear layers plus the full VR
modules and projector (`modules_to_save`); `image_newline` stays frozen then.

Examples:
  python examples/sft_documents.py --tiny --output-dir runs/sft-tiny
  python examples/sft_documents.py --model ckpt/llava-vr-qwen2-0.5b --stage stage2 --bf16 --gradient-checkpointing \
      --max-steps -1 --num-train-epochs 1 --num-samples 20000 --output-dir runs/sft-docs
  accelerate launch --config_file examples/accelerate/fsdp.yaml examples/sft_documents.py \
      --model ckpt/llava-vr-qwen2-0.5b --stage stage2 --bf16 --max-steps -1 --output-dir runs/sft-docs
"""

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if (REPO / "src" / "llava_vr").is_dir() and str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing

from llava_vr.training_llava_vr import (  # noqa: E402
    STAGE_LEARNING_RATES,
    STAGES,
    LlavaVRSFTTrainer,
    check_lora_trainable,
    lora_config_for,
    merge_and_save,
    restore_image_settings,
    set_base_tile_only,
    set_trainable,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("model")
    source.add_argument("--model", help="LLaVA-VR checkpoint folder (or Hub id) with its processor")
    source.add_argument("--tiny", action="store_true", help="tiny random model + processor built offline (smoke run)")
    source.add_argument("--attn-implementation", default=None, help="e.g. sdpa, flash_attention_2")
    source.add_argument("--model-dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="weights dtype (auto: float32, or bfloat16 for a LoRA run with --bf16)")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", help="datasets name or save_to_disk folder with `messages` and `images` columns")
    data.add_argument("--dataset-config", default=None, help="config name for load_dataset")
    data.add_argument("--dataset-split", default="train")
    data.add_argument("--jsonl", help="JSONL file of {image, question, answer} (with --image-root)")
    data.add_argument("--image-root", help="folder the JSONL `image` paths are relative to")
    data.add_argument("--num-samples", type=int, default=64, help="synthetic dataset size")
    data.add_argument("--image-size", type=int, default=None, help="synthetic image side (default: 56 tiny, 336)")
    data.add_argument("--kinds", default=None, help="comma-separated synthetic kinds (receipt,table,bar_chart,digit_grid)")
    data.add_argument("--max-train-samples", type=int, default=None, help="keep the first N rows of the dataset")

    training = parser.add_argument_group("training")
    training.add_argument("--stage", choices=sorted(STAGES), default="stage2")
    training.add_argument("--train-vision-tower", action="store_true", help="also train the vision tower")
    training.add_argument(
        "--anyres", action=argparse.BooleanOptionalAction, default=None,
        help="AnyRes tiling (default: off in stage1, on in stage2)",
    )
    training.add_argument("--lora", action="store_true", help="LoRA on the LLM + full VR/projector instead of full FT")
    training.add_argument("--lora-r", type=int, default=16)
    training.add_argument("--lora-alpha", type=int, default=32)
    training.add_argument("--lora-dropout", type=float, default=0.05)
    training.add_argument("--merge", action=argparse.BooleanOptionalAction, default=True,
                          help="with --lora: save a merged checkpoint to OUTPUT_DIR/merged (single process only)")
    training.add_argument("--learning-rate", type=float, default=None,
                          help="lr of every trained component (default: the stage's, 1e-3 / 2e-5; 2e-4 with --lora)")
    training.add_argument("--projector-lr", type=float, default=None)
    training.add_argument("--vision-remember-lr", type=float, default=None)
    training.add_argument("--llm-lr", type=float, default=None, help="LLM (or its LoRA adapters) and LM head")
    training.add_argument("--vision-tower-lr", type=float, default=None)
    training.add_argument("--weight-decay", type=float, default=0.0)
    training.add_argument("--warmup", type=float, default=0.03, help="warmup steps (>= 1) or ratio of the steps (< 1)")
    training.add_argument("--lr-scheduler-type", default="cosine")
    training.add_argument("--max-steps", type=int, default=10, help="-1: run --num-train-epochs")
    training.add_argument("--num-train-epochs", type=float, default=1.0)
    training.add_argument("--per-device-train-batch-size", type=int, default=2)
    training.add_argument("--gradient-accumulation-steps", type=int, default=1)
    training.add_argument("--gradient-checkpointing", action="store_true")
    training.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPUs with bf16)")
    training.add_argument("--max-length", type=int, default=None,
                          help="truncation length; default: the largest image's tokens + 1024 text tokens")
    training.add_argument("--logging-steps", type=int, default=1)
    training.add_argument("--save-steps", type=int, default=500)
    training.add_argument("--dataloader-num-workers", type=int, default=0)
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--report-to", default="none")
    training.add_argument("--output-dir", default="runs/sft-documents")
    training.add_argument("--merge-adapter", metavar="ADAPTER_DIR",
                          help="only merge a saved LoRA adapter into --model and save to --output-dir, then exit")
    args = parser.parse_args(argv)
    if not args.merge_adapter and bool(args.model) == bool(args.tiny):
        parser.error("give exactly one of --model PATH and --tiny")
    if args.merge_adapter and not args.model:
        parser.error("--merge-adapter needs --model (the base checkpoint)")
    if sum(x is not None for x in (args.dataset, args.jsonl)) > 1:
        parser.error("give at most one of --dataset and --jsonl")
    if args.jsonl and not args.image_root:
        parser.error("--jsonl needs --image-root")
    if args.lora and args.train_vision_tower:
        parser.error("--train-vision-tower is for full fine-tuning; LoRA adapts the LLM only")
    if args.lora and args.stage == "stage1":
        parser.error("stage 1 trains no LLM weight, so there is nothing for LoRA to adapt: use --lora with stage2")
    if args.anyres is None:
        args.anyres = args.stage != "stage1"
    return args


# ---- model and processor ------------------------------------------------------------------------------------------


def tiny_model_and_processor(seed: int = 0):
    """A tiny random LLaVA-VR (CLIP 56-px tiles, 5-layer Qwen2, VR before layers 1 and 4) with a matching processor."""
    import torch
    from transformers import LlavaOnevisionImageProcessorPil

    sys.path.insert(0, str(REPO / "modeling_tests"))
    from tiny_tokenizer import build_tiny_tokenizer

    from llava_vr import LlavaVRConfig, LlavaVRForConditionalGeneration
    from llava_vr.processing_llava_vr import LlavaVRProcessor

    tokenizer = build_tiny_tokenizer()
    tile = 56
    pinpoints = [[tile * h, tile * w] for h in (1, 2) for w in (1, 2, 3)]
    config = LlavaVRConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                           num_attention_heads=4, image_size=tile, patch_size=14),
        text_config=dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=5,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tokenizer),
                         max_position_embeddings=4096),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_remember_feature_layers=[1, 2, 3],
    )
    torch.manual_seed(seed)
    model = LlavaVRForConditionalGeneration(config)
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": tile, "width": tile}, crop_size={"height": tile, "width": tile}, image_grid_pinpoints=pinpoints
    )
    processor = LlavaVRProcessor.from_model_config(config, image_processor, tokenizer)
    return model, processor


def load_model_and_processor(args):
    if args.tiny:
        return tiny_model_and_processor(args.seed)
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    dtype = args.model_dtype
    if dtype == "auto":  # full fine-tuning keeps fp32 master weights (bf16 = autocast); a LoRA base may be bf16
        dtype = "bfloat16" if args.bf16 and args.lora else "float32"
    kwargs = {"trust_remote_code": True, "dtype": getattr(torch, dtype)}
    if args.attn_implementation:
        kwargs["attn_implementation"] = args.attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(args.model, **kwargs)
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    return model, processor


def default_max_length(config, images_per_sample: int = 1, text_tokens: int = 1024) -> int:
    """Tokens of the largest image the config can produce (an image shaped like the largest-area pinpoint) times
    `images_per_sample`, plus `text_tokens`: TRL's default 1024 is smaller than one 9-tile image."""
    from llava_vr.packing_llava_vr import anyres_layout

    tile = config.vision_config.image_size
    per_image = max(
        anyres_layout(pinpoint, config.image_grid_pinpoints, tile, config.token_grid_size, config.vision_aspect_ratio)
        .num_tokens
        for pinpoint in config.image_grid_pinpoints
    )
    return per_image * images_per_sample + text_tokens


# ---- data ---------------------------------------------------------------------------------------------------------


def jsonl_dataset(path, image_root):
    """`{image, question, answer}` lines -> a `datasets.Dataset` with `messages` and lazily decoded `images`."""
    from datasets import Dataset, Image, List

    rows = {"messages": [], "images": []}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            missing = {"image", "question", "answer"} - set(record)
            if missing:
                raise ValueError(f"{path}:{line_number}: missing fields {sorted(missing)}")
            image_path = os.path.join(image_root, record["image"])
            if not os.path.isfile(image_path):
                raise FileNotFoundError(f"{path}:{line_number}: no image {image_path}")
            rows["messages"].append([
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": record["question"]}]},
                {"role": "assistant", "content": [{"type": "text", "text": str(record["answer"])}]},
            ])
            rows["images"].append([image_path])
    dataset = Dataset.from_dict(rows)
    return dataset.cast_column("images", List(Image()))


def load_documents(args):
    if args.dataset:
        from datasets import load_dataset, load_from_disk

        if os.path.isdir(args.dataset) and (
            os.path.exists(os.path.join(args.dataset, "dataset_info.json"))
            or os.path.exists(os.path.join(args.dataset, "dataset_dict.json"))
        ):
            dataset = load_from_disk(args.dataset)
            if hasattr(dataset, "keys"):  # DatasetDict
                dataset = dataset[args.dataset_split]
        else:
            dataset = load_dataset(args.dataset, args.dataset_config, split=args.dataset_split)
        missing = {"messages", "images"} - set(dataset.column_names)
        if missing:
            raise ValueError(f"dataset {args.dataset} lacks the columns {sorted(missing)} (TRL's vision format)")
    elif args.jsonl:
        dataset = jsonl_dataset(args.jsonl, args.image_root)
    else:
        from llava_vr.synthetic_documents import KINDS, synthetic_document_dataset

        kinds = tuple(args.kinds.split(",")) if args.kinds else KINDS
        size = args.image_size or (56 if args.tiny else 336)
        dataset = synthetic_document_dataset(args.num_samples, seed=args.seed, split="train", kinds=kinds, size=size)
    if args.max_train_samples is not None:
        dataset = dataset.select(range(min(args.max_train_samples, len(dataset))))
    return dataset


# ---- main ---------------------------------------------------------------------------------------------------------


def log(message):
    """Prints on the first process only (the script runs once per process under `accelerate launch`)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(message, flush=True)


def trained_components(args) -> tuple:
    components = tuple(STAGES[args.stage]) + (("vision_tower",) if args.train_vision_tower else ())
    if args.lora:  # the LLM trains through its LoRA adapters (grouped under "llm"); the head stays frozen
        components = tuple(c for c in components if c != "lm_head")
    return components


def component_learning_rates(args) -> dict:
    """lr per trained component: `--learning-rate` (default: the stage's, or 2e-4 with LoRA), then the overrides."""
    default = args.learning_rate or (2e-4 if args.lora else STAGE_LEARNING_RATES[args.stage])
    rates = {component: default for component in trained_components(args)}
    overrides = {
        "projector": args.projector_lr,
        "vision_remember": args.vision_remember_lr,
        "llm": args.llm_lr,
        "lm_head": args.llm_lr,
        "vision_tower": args.vision_tower_lr,
    }
    rates.update({k: v for k, v in overrides.items() if v is not None and k in rates})
    return rates


def merge_adapter(args):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base = AutoModelForImageTextToText.from_pretrained(args.model, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    merged = merge_and_save(PeftModel.from_pretrained(base, args.merge_adapter), args.output_dir, processor)
    print(f"merged {args.merge_adapter} into {type(merged).__name__}, saved to {args.output_dir}")


def main(argv=None):
    args = parse_args(argv)
    if args.merge_adapter:
        return merge_adapter(args)

    from trl import SFTConfig

    model, processor = load_model_and_processor(args)
    saved_image_settings = None
    if not args.anyres:
        # stage 1 "no AnyRes": model and processor both use vision_aspect_ratio="pad" (base tile + newline per image)
        saved_image_settings = set_base_tile_only(model, processor)
    train_dataset = load_documents(args)

    rates = component_learning_rates(args)
    components = trained_components(args)
    peft_config = None
    if args.lora:
        # PEFT freezes everything but LoRA and modules_to_save; the LLM trains through its adapters only
        peft_config = lora_config_for(
            model, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
            train_vision_remember="vision_remember" in components, train_projector="projector" in components,
        )
    else:
        counts = set_trainable(model, components)
        summary = ", ".join(f"{c} {n['trainable']:,}/{n['total']:,}" for c, n in counts.items())
        log(f"trainable parameters: {summary}")

    max_length = args.max_length or default_max_length(model.config)
    training_args = SFTConfig(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        num_train_epochs=args.num_train_epochs,
        per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=max(rates.values()),
        lr_scheduler_type=args.lr_scheduler_type,
        warmup_steps=args.warmup,
        weight_decay=args.weight_decay,
        gradient_checkpointing=args.gradient_checkpointing,
        bf16=args.bf16,
        max_length=max_length,
        assistant_only_loss=True,  # labels only on assistant replies (the chat template has {% generation %})
        logging_steps=args.logging_steps,
        save_steps=args.save_steps,
        save_total_limit=2,
        dataloader_num_workers=args.dataloader_num_workers,
        seed=args.seed,
        report_to=args.report_to,
    )
    trainer = LlavaVRSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=processor,
        peft_config=peft_config,
        component_learning_rates=rates,
    )
    if args.lora:
        summary = check_lora_trainable(
            trainer.model,
            train_vision_remember="vision_remember" in components,
            train_projector="projector" in components,
        )
        log(f"LoRA run, trainable: {summary}")
    log(f"learning rates per component: {rates}; max_length {max_length}; AnyRes {'on' if args.anyres else 'off'}")
    trainer.train()

    # the final save gets the checkpoint's AnyRes settings back (checkpoints during a stage-1 run keep "pad", right for
    # resuming that run)
    if saved_image_settings is not None:
        restore_image_settings(model, processor, saved_image_settings)
    trainer.save_model(args.output_dir)  # weights (or the adapter) + config + code files + processor
    if args.lora and args.merge:
        if trainer.accelerator.num_processes > 1 or trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
            log(
                "merge the adapter on one process: python examples/sft_documents.py "
                f"--merge-adapter {args.output_dir} --model {args.model or 'BASE_CHECKPOINT'} "
                f"--output-dir {args.output_dir}/merged"
            )
        else:
            merge_and_save(trainer.model, os.path.join(args.output_dir, "merged"), processor)
            log(f"merged checkpoint: {os.path.join(args.output_dir, 'merged')}")
    return trainer


if __name__ == "__main__":
    main()
