# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""What differs between the supported Transformers versions (5.19 to 5.25), done one way for all of them.

- `TowerHiddenStates`: the tower's hidden states by index. `output_hidden_states=<list>` selects states by index from
  5.23 on but means something else in 5.19-5.22 (one entry per encoder layer, no embeddings entry, `None` for
  negative indices), which would shift Vision Remember's feature levels by one; `output_hidden_states=True` keeps
  every state. Hooks record only the chosen states, numbered as the tower's own `output_hidden_states=True` tuple.
- `slice_logits_to_keep`: Transformers' helper where it exists (5.21 on), else the slicing of 5.19-5.20's models.
- The KV cache's name: `past_key_values` up to 5.23, `cache` from 5.24 on (decoder layers, masks, `generate()`'s model
  inputs, model outputs; the old name warns on every call). `LAYER_CACHE`, `MASK_CACHE`, `GENERATION_CACHE` and
  `OUTPUT_CACHE` are the names the installed Transformers takes, read off its signatures and fields; `take_cache`
  accepts a cache under either name.
"""

import inspect
from functools import partial

import torch
from torch import nn
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

try:  # Transformers >= 5.21: also takes 2D position / boolean tensors
    from transformers.modeling_utils import slice_logits_to_keep
except ImportError:  # Transformers 5.19-5.20

    def slice_logits_to_keep(hidden_states: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
        """`(batch, seq, hidden)` -> the last `logits_to_keep` positions (`0`: all), or the positions of a 1D tensor."""
        if isinstance(logits_to_keep, int):
            logits_to_keep = slice(-logits_to_keep, None)
        return hidden_states[:, logits_to_keep, :]


def _cache_parameter(function) -> str:
    return "cache" if "cache" in inspect.signature(function).parameters else "past_key_values"


LAYER_CACHE = _cache_parameter(Qwen2DecoderLayer.forward)  # the keyword a decoder layer takes its cache by
MASK_CACHE = _cache_parameter(create_causal_mask)  # ... and `create_causal_mask` / `create_sliding_window_causal_mask`
GENERATION_CACHE = _cache_parameter(GenerationMixin.prepare_inputs_for_generation)  # ... and `generate()`'s inputs
OUTPUT_CACHE = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"  # outputs'


def take_cache(past_key_values, kwargs: dict):
    """The KV cache of a forward, given as `past_key_values` or (`generate()` from 5.24 on) as `cache` in `kwargs`,
    which loses that key. Raises `ValueError` when both name different caches."""
    cache = kwargs.pop("cache", None)
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("pass the KV cache once: `past_key_values` and `cache` hold different caches")
    return cache if past_key_values is None else past_key_values


class TowerHiddenStates:
    """Records chosen hidden states of a CLIP / SigLIP encoder (its `layers`) during `run`.

    Index `0` is the input of encoder layer 0 (the embeddings, after CLIP's `pre_layrnorm`), index `i >= 1` the output
    of layer `i - 1`, negative indices count from the end: the tower's own `output_hidden_states=True` numbering.
    Outside `run` the hooks do nothing (e.g. a gradient-checkpointing recompute in the backward pass).
    """

    def __init__(self, layers: nn.ModuleList):
        self.num_states = len(layers) + 1
        self._wanted: set[int] | None = None
        self._states: dict[int, torch.Tensor] = {}
        layers[0].register_forward_pre_hook(self._record_input, with_kwargs=True)
        for index, layer in enumerate(layers, start=1):
            layer.register_forward_hook(partial(self._record_output, index))

    def run(self, tower: nn.Module, pixel_values: torch.Tensor, indices, **tower_kwargs) -> tuple:
        """Runs `tower(pixel_values, **tower_kwargs)` recording the states `indices` (ints, negative from the end);
        `tower_kwargs` are the tower's own flags (`output_attentions`, `output_hidden_states`, ...).

        Returns `(tower_output, hidden_states)`: `hidden_states` has all `num_states` positions, `None` where a state
        was not chosen, so `hidden_states[i]` reads as in the tower's own tuple."""
        bad = [i for i in indices if not -self.num_states <= i < self.num_states]
        if bad:
            raise ValueError(f"hidden states {bad} do not exist: the tower has {self.num_states} (0 = embeddings)")
        wanted = {i % self.num_states for i in indices}
        self._wanted, self._states = wanted, {}
        try:
            output = tower(pixel_values, **tower_kwargs, return_dict=True)
        finally:
            states, self._wanted, self._states = self._states, None, {}
        missing = sorted(wanted - states.keys())
        if missing:
            raise RuntimeError(f"the tower's encoder layers did not produce hidden states {missing}")
        return output, tuple(states.get(i) for i in range(self.num_states))

    def _keep(self, index: int, hidden_states):
        if self._wanted is not None and index in self._wanted:
            self._states[index] = hidden_states[0] if isinstance(hidden_states, tuple) else hidden_states

    def _record_input(self, module, args, kwargs):
        self._keep(0, args[0] if args else kwargs["hidden_states"])

    def _record_output(self, index, module, args, output):
        self._keep(index, output)


__all__ = [
    "GENERATION_CACHE",
    "LAYER_CACHE",
    "MASK_CACHE",
    "OUTPUT_CACHE",
    "TowerHiddenStates",
    "slice_logits_to_keep",
    "take_cache",
]
