# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Leaf layers that initialise themselves to a no-op, so new residual branches leave a converted model unchanged.

Transformers initialises custom-code models leaf by leaf and skips modules without direct parameters, so the
identity init must live on the leaves: each class here has `init_llava_vr()`, which the `_init_weights` of the
model that holds it calls (through `transformers.initialization`, so loaded weights are never overwritten).
"""

from torch import nn
from transformers import initialization as init


class ZeroInitLinear(nn.Linear):
    """`nn.Linear` that starts at zero (output projection of a residual branch)."""

    def init_llava_vr(self):
        init.zeros_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)


class ZeroInitConv2d(nn.Conv2d):
    """`nn.Conv2d` that starts at zero (positional residual of LDPv2)."""

    def init_llava_vr(self):
        init.zeros_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)


def init_llava_vr_leaf(module: nn.Module) -> bool:
    """Runs the module's own no-op initialisation if it has one; `True` if it did."""
    if hasattr(module, "init_llava_vr"):
        module.init_llava_vr()
        return True
    return False


__all__ = ["ZeroInitConv2d", "ZeroInitLinear", "init_llava_vr_leaf"]
