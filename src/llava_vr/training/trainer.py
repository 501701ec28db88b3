# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""`LlavaVRSFTTrainer`: TRL's `SFTTrainer` with one learning rate per LLaVA-VR component."""

from __future__ import annotations

from collections.abc import Mapping

from .components import check_components
from .optimizer import component_parameter_groups

try:  # trl is in the `train` extra; without it the helpers of this package still work, the trainer does not
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
        check_components(self.component_learning_rates)
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


__all__ = ["LlavaVRSFTTrainer"]
