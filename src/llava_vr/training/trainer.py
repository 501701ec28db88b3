# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""`LlavaVRSFTTrainer`: TRL's `SFTTrainer` with one learning rate per LLaVA-VR component, and video samples."""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Mapping
from pathlib import Path

from .components import check_components
from .lora import peft_checkpointing_probe_quiet, restore_saved_module_dtypes
from .optimizer import component_parameter_groups

try:  # trl is in the `train` extra; without it the helpers of this package still work, the trainer does not
    from trl import SFTTrainer as _SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from .collator import LlavaVRVisionCollator
except ImportError:  # pragma: no cover
    _SFTTrainer = object
    DataCollatorForVisionLanguageModeling = LlavaVRVisionCollator = None

IMAGE_COLUMNS = ("image", "images")
VIDEO_COLUMNS = ("video", "videos")


def column_names(dataset) -> list[str]:
    """A dataset's columns (an `IterableDataset` of unknown features: its first row's keys)."""
    names = getattr(dataset, "column_names", None)
    return list(names) if names is not None else list(next(iter(dataset)))


def with_images_column(dataset):
    """A dataset with a video column but no image column gets an empty `images` list per row, so that TRL treats
    it as a vision dataset (collated on the fly, `videos` kept); any other dataset is returned as it is."""
    if dataset is None or isinstance(dataset, (str, Mapping)):
        return dataset
    names = column_names(dataset)
    if not set(VIDEO_COLUMNS) & set(names) or set(IMAGE_COLUMNS) & set(names):
        return dataset
    if hasattr(dataset, "add_column"):
        return dataset.add_column("images", [[]] * len(dataset))
    return dataset.map(lambda _: {"images": []})


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

    `model_card` (keyword arguments of `render_sft_card`: `base_model`, `source`, `dataset_name`, `data`,
    `license`) describes the run in the README.md that `create_model_card` writes (on checkpoints, on
    `push_to_hub`, and when called after training): an `image-text-to-text` card naming the base model, instead of
    TRL's text-generation card.

    Video samples: a `videos` column (per row a list of videos, each a list of frames, a `(T, H, W, 3)` array or a
    video file path; see `collator.py`) next to TRL's `messages` (and `images`): TRL's vision collator is replaced by
    `LlavaVRVisionCollator`, which fills the rows' `{"type": "video"}` items and keeps TRL's truncation and
    assistant-only loss; a dataset with videos but no `images` column is given an empty one.
    """

    def __init__(
        self,
        *args,
        component_learning_rates: Mapping[str, float] | None = None,
        model_card: Mapping[str, str | None] | None = None,
        **kwargs,
    ):
        self.component_learning_rates = dict(component_learning_rates or {})
        self.model_card = dict(model_card or {})
        check_components(self.component_learning_rates)
        bound = inspect.signature(_SFTTrainer.__init__).bind_partial(self, *args, **kwargs).arguments
        bound.pop("self")
        for name in ("train_dataset", "eval_dataset"):
            if name in bound:
                value = bound[name]
                bound[name] = (
                    {key: with_images_column(d) for key, d in value.items()}
                    if isinstance(value, Mapping)
                    else with_images_column(value)
                )
        extra = bound.pop("kwargs", {})  # SFTTrainer's own **kwargs, if it takes any
        with peft_checkpointing_probe_quiet() if bound.get("peft_config") else contextlib.nullcontext():
            super().__init__(**bound, **extra)
        if type(self.data_collator) is DataCollatorForVisionLanguageModeling:  # TRL's default for vision datasets
            self.data_collator = LlavaVRVisionCollator.from_trl(self.data_collator)
        if getattr(self.model, "is_loaded_in_4bit", False) or getattr(self.model, "is_loaded_in_8bit", False):
            restore_saved_module_dtypes(self.model)  # QLoRA: TRL made the fully trained VR / projector copies bf16
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        ds_config = getattr(plugin, "deepspeed_config", None) or {}
        if self.component_learning_rates and "optimizer" in ds_config:
            raise ValueError(
                "the DeepSpeed config has an 'optimizer' block, which bypasses Trainer.create_optimizer and so the "
                "per-component learning rates: remove the 'optimizer' block (Trainer then builds AdamW itself)"
            )

    def _set_signature_columns_if_needed(self):
        """TRL keeps `messages` / `images` of a vision dataset for the collator; `video` / `videos` too."""
        super()._set_signature_columns_if_needed()
        if getattr(self, "_is_vision_dataset", False):
            self._signature_columns = list(dict.fromkeys([*self._signature_columns, *VIDEO_COLUMNS]))

    def _issue_warnings_after_load(self, load_result) -> None:
        """Resuming a model whose LM head is tied to the input embeddings: `save_pretrained` leaves the tied copy
        (`lm_head.weight`) out of the checkpoint, so Trainer's `load_state_dict(strict=False)` reports it missing
        although it is there through the tie. Tied keys are re-tied instead of reported; any other missing or
        unexpected key is reported as Trainer does."""
        tied = getattr(self.model, "all_tied_weights_keys", None) or {}
        missing = [key for key in load_result.missing_keys if key not in tied]
        if len(missing) < len(load_result.missing_keys):
            self.model.tie_weights()
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None, **kwargs):
        """README.md in `args.output_dir` (main process only): `render_sft_card` with `self.model_card`."""
        self.write_model_card(self.args.output_dir, model_name, dataset_name)

    def write_model_card(self, folder, model_name: str | None = None, dataset_name: str | None = None) -> None:
        """`folder/README.md` (main process only); `model_name` defaults to the Hub repo's or the folder's name."""
        if not self.is_world_process_zero():
            return
        from .model_card import render_sft_card

        values = {**self.model_card, **({"dataset_name": dataset_name} if dataset_name else {})}
        name = model_name or (self.args.hub_model_id or Path(folder).resolve().name).split("/")[-1]
        render_sft_card(self, model_name=name, **values).save(os.path.join(folder, "README.md"))

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


__all__ = ["LlavaVRSFTTrainer"]
