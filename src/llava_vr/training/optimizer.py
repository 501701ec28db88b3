# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Optimizer parameter groups with one learning rate per LLaVA-VR component."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from torch import nn

from .components import COMPONENTS, check_components, component_of


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
    check_components(learning_rates)
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

    groups = [
        {
            "params": grouped[(component, decays)],
            "lr": float(learning_rates.get(component, default_learning_rate)),
            "weight_decay": weight_decay if decays else 0.0,
            "component": component,
        }
        for component in COMPONENTS
        for decays in (True, False)
        if grouped.get((component, decays))
    ]
    return split_groups_by_device_mesh(groups)


def split_groups_by_device_mesh(groups: list[dict]) -> list[dict]:
    """`groups` with each group split by the device mesh of its FSDP2 `DTensor` parameters (one optimizer group may
    not mix meshes); unchanged when all parameters share one mesh (or none)."""
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


__all__ = ["component_parameter_groups", "split_groups_by_device_mesh"]
