# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Command-line options of `llava-vr sft`: TRL's `SFTConfig` and `ModelConfig` (subclassed only for `--bf16`, `--model`,
`--lora` and `--dtype`) plus `LlavaVRSFTOptions` (the project's own), parsed by `TrlParser` (so `--config run.yaml`,
resume, evaluation and `--push_to_hub` come with TRL).

Defaults that differ from TRL's (`SFT_DEFAULTS`): a 10-step run into `runs/sft-documents`, batch 2, cosine schedule,
3 % warmup, logging every step, two checkpoints kept, seed 0, no bf16, no activation checkpointing, loss on the
assistant replies only; `learning_rate` and `max_length` are derived from the stage and the model unless given.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field

from trl import ModelConfig, SFTConfig, TrlParser

from .components import STAGES
from .preflight import accelerator_available

SFT_DEFAULTS = dict(
    output_dir="runs/sft-documents",
    max_steps=10,
    num_train_epochs=1.0,
    per_device_train_batch_size=2,
    learning_rate=None,  # None: the stage's (or the LoRA) learning rate, see `component_learning_rates`
    lr_scheduler_type="cosine",
    weight_decay=0.0,
    max_length=None,  # None: `default_max_length` of the model config
    assistant_only_loss=True,  # labels only on assistant replies (the chat template has {% generation %})
    logging_steps=1,
    save_steps=500,
    save_total_limit=2,
    dataloader_num_workers=0,
    seed=0,
    report_to="none",
)


@dataclass
class LlavaVRSFTConfig(SFTConfig):
    """TRL's `SFTConfig` where a bare `--bf16` means true and the default is false (TRL's `bool | None` field,
    default "true unless fp16", needs a value on the command line), and `--warmup` spells `--warmup_steps`.

    A warmup ratio (`--warmup 0.03`) rounds down (`get_warmup_steps`): a short run does not spend its first step
    at learning rate 0.

    Activation checkpointing is off unless `--activation_checkpointing` (TRL's default sets the deprecated
    `gradient_checkpointing`, which warns). On a machine without GPU: `--bf16` is bf16 autocast on the CPU
    (`use_cpu` is set, where Transformers would refuse), and the data loader does not pin memory.
    """

    bf16: bool = field(
        default=False,
        metadata={"help": "bf16 mixed precision (autocast over fp32 master weights); without GPU, on the CPU"},
    )
    warmup_steps: float = field(
        default=0.03, metadata={"help": "warmup steps (>= 1) or ratio of the steps (< 1)", "aliases": ["--warmup"]}
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "deprecated spelling of --activation_checkpointing"}
    )

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """Warmup steps: `warmup_steps` when >= 1, else that share of the steps rounded down (Transformers rounds
        up, so a 3 % warmup of a 1- to 33-step run is one step, and its first step trains at learning rate 0: a
        1-step smoke run would train nothing)."""
        if self.warmup_steps >= 1:
            return int(self.warmup_steps)
        return math.floor(num_training_steps * self.warmup_steps)

    def __post_init__(self):
        if not accelerator_available():
            self.use_cpu = self.use_cpu or bool(self.bf16 or self.bf16_full_eval)
            self.dataloader_pin_memory = False  # nothing to pin to; torch warns on every data loader otherwise
        super().__post_init__()


@dataclass
class LlavaVRModelConfig(ModelConfig):
    """TRL's `ModelConfig` with the short spellings `--model` and `--lora`, and a dtype that follows the run."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "LLaVA-VR checkpoint folder or Hub id, with its processor", "aliases": ["--model"]},
    )
    use_peft: bool = field(
        default=False,
        metadata={
            "help": "LoRA on the LLM's decoder linear layers, VR and projector trained fully",
            "aliases": ["--lora"],
        },
    )
    dtype: str | None = field(
        default=None,
        metadata={
            "help": "weights dtype (with --load_in_4bit: its compute dtype); default float32 (bf16 = autocast over "
            "fp32 master weights), or bfloat16 for a LoRA run with --bf16",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )


@dataclass
class LlavaVRSFTOptions:
    """What `llava-vr sft` adds to TRL's options: data source, tiny smoke model, stage, per-component lrs, merging."""

    tiny: bool = field(default=False, metadata={"help": "tiny random model + processor built offline (smoke run)"})
    dataset: str | None = field(
        default=None,
        metadata={"help": "datasets name or save_to_disk folder with `messages` and `images` and/or `videos` columns"},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "config name for load_dataset"})
    dataset_split: str = field(default="train", metadata={"help": "training split of --dataset"})
    dataset_eval_split: str = field(default="test", metadata={"help": "evaluation split of --dataset"})
    jsonl: str | None = field(default=None, metadata={"help": "JSONL file of {image, question, answer} lines"})
    eval_jsonl: str | None = field(default=None, metadata={"help": "evaluation JSONL (images under --image_root)"})
    llava_data: str | None = field(
        default=None,
        metadata={
            "help": "LLaVA conversation data (.json list or .jsonl lines of {id, image, conversations}, images "
            "under --image_root; multi-turn, text-only rows too)"
        },
    )
    eval_llava_data: str | None = field(default=None, metadata={"help": "evaluation data in LLaVA's format"})
    image_root: str | None = field(
        default=None, metadata={"help": "folder the `image` paths of --jsonl / --llava_data are relative to"}
    )
    num_samples: int = field(default=64, metadata={"help": "synthetic training set size"})
    num_eval_samples: int = field(default=16, metadata={"help": "synthetic evaluation set size (validation split)"})
    image_size: int | None = field(default=None, metadata={"help": "synthetic image side (default: 56 tiny, 336)"})
    kinds: str | None = field(
        default=None, metadata={"help": "comma-separated synthetic kinds (receipt,table,bar_chart,digit_grid)"}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "keep the first N rows of the dataset"})
    stage: str = field(default="stage2", metadata={"help": "paper stage", "choices": sorted(STAGES)})
    train_vision_tower: bool = field(default=False, metadata={"help": "also train the vision tower"})
    anyres: bool | None = field(
        default=None, metadata={"help": "AnyRes tiling, true or false (default: off in stage1, on in stage2)"}
    )
    projector_lr: float | None = field(default=None, metadata={"help": "lr of the projector"})
    vision_remember_lr: float | None = field(default=None, metadata={"help": "lr of the Vision Remember modules"})
    llm_lr: float | None = field(default=None, metadata={"help": "lr of the LLM (or its LoRA adapters) and LM head"})
    vision_tower_lr: float | None = field(default=None, metadata={"help": "lr of the vision tower"})
    merge: bool = field(
        default=True, metadata={"help": "with --lora: save a merged checkpoint to OUTPUT_DIR/merged (one process)"}
    )
    merge_adapter: str | None = field(
        default=None,
        metadata={"help": "only merge this saved LoRA adapter into --model, save to --output_dir, and exit"},
    )
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "Hub id the model card names as base model (default: --model when it is a Hub id, else "
            "the base_model in --model's README.md)"
        },
    )


# ModelConfig options LLaVA-VR decides itself (LoRA targets, modules to save)
UNSUPPORTED_MODEL_OPTIONS = ("lora_target_modules", "lora_target_parameters", "lora_modules_to_save")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the options' help (as HfArgumentParser does), the description as written."""


def build_parser(prog: str | None = None, description: str | None = None) -> TrlParser:
    """`TrlParser((LlavaVRSFTConfig, LlavaVRModelConfig, LlavaVRSFTOptions))` with `SFT_DEFAULTS`."""
    parser = TrlParser(
        (LlavaVRSFTConfig, LlavaVRModelConfig, LlavaVRSFTOptions),
        prog=prog,
        description=description,
        formatter_class=_HelpFormatter,
    )
    parser.set_defaults(**SFT_DEFAULTS)
    return parser


def check_options(parser, training_args, model_args, options) -> None:
    """Refuses contradictory options with `parser.error` (exit status 2, one line)."""
    lora = model_args.use_peft
    if not options.merge_adapter and bool(model_args.model_name_or_path) == options.tiny:
        parser.error("give exactly one of --model PATH and --tiny")
    if options.merge_adapter and not model_args.model_name_or_path:
        parser.error("--merge_adapter needs --model (the base checkpoint)")
    sources = [f"--{name}" for name in ("dataset", "jsonl", "llava_data") if getattr(options, name)]
    if len(sources) > 1:
        parser.error(f"give at most one of --dataset, --jsonl and --llava_data (got {' and '.join(sources)})")
    if options.eval_llava_data and not options.llava_data:
        parser.error("--eval_llava_data goes with --llava_data")
    if options.llava_data and training_args.eval_strategy != "no" and not options.eval_llava_data:
        parser.error("evaluation with --llava_data needs --eval_llava_data (held-out rows in LLaVA's format)")
    if (options.jsonl or options.eval_jsonl) and not options.image_root:
        parser.error("--jsonl / --eval_jsonl need --image_root")
    if options.jsonl and training_args.eval_strategy != "no" and not options.eval_jsonl:
        parser.error("evaluation with --jsonl needs --eval_jsonl (held-out lines, images under --image_root)")
    if lora and options.train_vision_tower:
        parser.error("--train_vision_tower is for full fine-tuning; LoRA adapts the LLM only")
    if lora and options.stage == "stage1":
        parser.error("stage 1 trains no LLM weight, so there is nothing for LoRA to adapt: use --lora with stage2")
    quantized = "--load_in_4bit" if model_args.load_in_4bit else "--load_in_8bit" if model_args.load_in_8bit else None
    if quantized and not lora and not options.merge_adapter:
        parser.error(f"{quantized} loads a frozen quantized base: add --lora to train adapters on it (QLoRA)")
    if quantized and options.tiny:
        parser.error(
            f"{quantized} quantizes a checkpoint while loading it: give --model PATH (--tiny builds its "
            "model in memory)"
        )
    if quantized and options.merge_adapter:
        parser.error(f"--merge_adapter loads the base in full precision to merge exactly: drop {quantized}")
    given = [name for name in UNSUPPORTED_MODEL_OPTIONS if getattr(model_args, name)]
    if given:
        parser.error(
            f"--{given[0]} is not supported: LLaVA-VR's LoRA targets the LLM's decoder linear layers and "
            "saves the VR modules and the projector (see lora_config_for)"
        )


def parse_args(argv: list[str] | None = None, prog: str | None = None, description: str | None = None):
    """`(training_args, model_args, options)` from the command line (or a `--config` YAML); `options.anyres` resolved
    from the stage when not given."""
    parser = build_parser(prog, description)
    try:
        training_args, model_args, options = parser.parse_args_and_config(argv)
    except ValueError as error:  # TrainingArguments' own checks (fp16 and bf16, eval steps, ...): one line, status 2
        parser.error(str(error))
    check_options(parser, training_args, model_args, options)
    if options.anyres is None:
        options.anyres = options.stage != "stage1"
    return training_args, model_args, options


__all__ = [
    "LlavaVRModelConfig",
    "LlavaVRSFTConfig",
    "LlavaVRSFTOptions",
    "SFT_DEFAULTS",
    "build_parser",
    "check_options",
    "parse_args",
]
