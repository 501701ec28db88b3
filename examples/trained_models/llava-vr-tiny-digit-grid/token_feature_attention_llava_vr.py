# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Token-feature cross-attention of Vision Remember: queries from the vision tokens, keys and values from the
multi-level vision features. `sela` (a window per token), `global` (all cells of the token's image) and
`global_tile` (all cells of the token's tile); `deformable` lives in `deformable_attention_llava_vr.py`.

Two exact formulations of the same function, chosen per call by FLOPs (`vision_remember_formulation="auto"`):
- **plain**: `K = W_k LN(f) + b_k` and `V = W_v LN(f) + b_v` for every feature cell, then attention.
- **absorbed**: keys and values are linear in the features, so per head `q·(W_k LN(f)) = (W_kᵀ q)·LN(f)` and
  `Σ a·s·(W_v LN(f) + b_v) = W_v (Σ a·s·LN(f)) + b_v Σ a·s`. The queries move to the feature width instead of every
  feature cell moving to VR's width: the projection work drops by the cells a token reads per query. LayerNorm's
  affine folds into the projections (`W diag(γ)`, bias `W β + b`); the key's bias is constant per token and head (it
  cancels in the softmax, and is kept only so every parameter gets its gradient); the affine-free normalisation is
  computed once per forward for all VR layers (`VisionRememberInputs.normalized_features`).

The absorbed formulation reads the parameters of `k_proj`, `v_proj` and `feature_norm` instead of calling them, so it
runs only where that is exact (`fold_blocker`): the modules are exactly `nn.Linear` / `nn.LayerNorm` with plain,
materialised parameters and nothing hooked on them. PEFT adapters (a wrapper), bitsandbytes and `quantize_dynamic`
(replaced Linears), torchao (quantised tensor-subclass weights), Accelerate offload (`_hf_hook`, weights on `meta`),
DeepSpeed ZeRO-3 (hooks) and any forward/backward hook make `auto` run the plain formulation, which calls the modules
(same outputs and gradients as their own forward); a forced `absorbed` is refused with a `ValueError`. The check
depends only on the modules, never on the image, so `auto` treats every image of a model alike.
"""

import torch
from torch import nn
from torch.nn import functional as F

from .feature_windows_llava_vr import check_window
from .registries_llava_vr import FORMULATIONS, check_implemented
from .vision_remember_inputs_llava_vr import FEATURE_NORM_EPS, VisionRememberInputs

# `TokenFeatureAttention.uses_absorbed` runs `attend_absorbed` or `attend_plain`, forced or (`auto`) by FLOPs
check_implemented(FORMULATIONS, ("auto", "absorbed", "plain"), "vision_remember_formulation")

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def fold_blocker(module: nn.Module) -> str | None:
    """Why reading `module`'s parameters would not equal calling it, or `None` when it is exact: `module` must be
    exactly `nn.Linear` or `nn.LayerNorm` (with bias and affine; a LayerNorm with `FEATURE_NORM_EPS`, the eps the
    shared normalisation uses), not a subclass or wrapper (PEFT, bitsandbytes, `quantize_dynamic`, FSDP2's per-module
    class), its parameters plain tensors (not torchao's quantised subclasses or DTensors) off the `meta` device
    (Accelerate offload), with no module hooks and no instance-level `forward` (Accelerate's `_hf_hook`)."""
    kind = type(module)
    if kind is not nn.Linear and kind is not nn.LayerNorm:
        return f"it is a {kind.__module__}.{kind.__qualname__}, not a plain nn.Linear / nn.LayerNorm"
    if kind is nn.LayerNorm and module.eps != FEATURE_NORM_EPS:
        return f"its eps is {module.eps}, not {FEATURE_NORM_EPS}"
    if any(getattr(module, hooks) for hooks in _HOOK_DICTS):
        return "it has forward or backward hooks"
    if hasattr(module, "_hf_hook") or "forward" in module.__dict__:
        return "its forward is replaced (an Accelerate hook)"
    for name in ("weight", "bias"):
        param = getattr(module, name, None)
        if not isinstance(param, torch.Tensor) or type(param) not in (torch.Tensor, nn.Parameter):
            return f"its {name} is a {type(param).__qualname__}, not a plain tensor"
        if param.is_meta:
            return f"its {name} is on the meta device (offloaded)"
    return None


class TokenFeatureAttention(nn.Module):
    """Base of the token-feature cross-attentions. Subclasses define `attend_plain`, `attend_absorbed` (both
    `(Nv, d) -> (Nv, d)`, before `o_proj`) and `formulation_flops`, and declare what they read of
    `VisionRememberInputs` (`reads_windows`, `normalizes_per_level`) and their settings' checks (`check_config`)."""

    reads_windows = False
    """Whether it reads the configured windows (`VisionRememberInputs.window_index` / `window_valid`)."""
    normalizes_per_level = False
    """Whether its features are layer-normalised per feature level (else over the whole multi-level width)."""

    @classmethod
    def check_config(cls, config) -> None:
        """Raises `ValueError` naming a setting of `config` this interaction cannot run (before it is built)."""

    def __init__(self, hidden_size: int, feature_size: int, num_heads: int, with_keys: bool = True):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, hidden_size // num_heads
        self.hidden_size, self.feature_size = hidden_size, feature_size
        self.folded_modules = ("k_proj", "v_proj", "feature_norm") if with_keys else ("v_proj", "feature_norm")
        self.query_norm = nn.LayerNorm(hidden_size)
        self.feature_norm = nn.LayerNorm(feature_size)
        if with_keys:  # dot-product attention; deformable attention predicts its weights from the query instead
            self.q_proj = nn.Linear(hidden_size, hidden_size)
            self.k_proj = nn.Linear(feature_size, hidden_size)
        self.v_proj = nn.Linear(feature_size, hidden_size)
        self.o_proj = nn.Linear(hidden_size, hidden_size)

    @classmethod
    def from_config(cls, config) -> "TokenFeatureAttention":
        """The interaction at VR's width, reading `levels x tower width` multi-level features."""
        return cls(
            config.vision_remember_hidden_size,
            config.vision_remember_feature_size,
            config.vision_remember_num_heads,
        )

    def queries(self, tokens: torch.Tensor) -> torch.Tensor:
        """`(Nv, d) -> (Nv, H, hd)`."""
        return self.q_proj(self.query_norm(tokens)).view(-1, self.num_heads, self.head_dim)

    def keys_values(self, inputs: VisionRememberInputs, like: torch.Tensor):
        """Plain formulation: `(T, G*G, d)` keys and saliency-weighted values."""
        features = self.feature_norm(inputs.features.to(like.device, like.dtype))
        values = self.v_proj(features) * inputs.saliency.to(like.device, like.dtype)[..., None]
        return self.k_proj(features), values

    def folded(self, proj: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        """`proj ∘ feature_norm` on affine-free normalised features: weight `(H, hd, C)` and bias `(H, hd)`."""
        norm = self.feature_norm
        weight = proj.weight * norm.weight
        bias = proj.weight @ norm.bias + proj.bias
        return weight.view(self.num_heads, self.head_dim, -1), bias.view(self.num_heads, self.head_dim)

    def absorbed_queries(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(Nv, d) -> (Nv, H, C), (Nv, H)`: each head's query mapped to the feature space by its folded key weight,
        and its product with the folded key bias. That product is the same for every key of a query and cancels in
        the softmax; it is kept (`Nv * d` FLOPs) so that every parameter takes part in backward (DDP without
        `find_unused_parameters`) and the gradients match the plain formulation's."""
        weight, bias = self.folded(self.k_proj)
        queries = self.queries(tokens)
        return torch.einsum("nhd,hdc->nhc", queries, weight), (queries * bias).sum(-1)

    def absorbed_values(self, aggregated: torch.Tensor, weight_sum: torch.Tensor) -> torch.Tensor:
        """`(Nv, H, C)` attention-and-saliency-weighted normalised features and `(Nv, H)` their weights' sum ->
        `(Nv, d)`, the attended values."""
        weight, bias = self.folded(self.v_proj)
        attended = torch.einsum("nhc,hdc->nhd", aggregated, weight) + bias * weight_sum[..., None]
        return attended.flatten(1)

    def formulation_flops(self, inputs: VisionRememberInputs, num_tokens: int) -> dict[str, int]:
        """FLOPs of the formulation-dependent part of one call: `{"plain": ..., "absorbed": ...}`."""
        raise NotImplementedError

    def fold_blockers(self) -> dict[str, str]:
        """`{module name: reason}` for each of `folded_modules` whose parameters the absorbed formulation may not
        read (see `fold_blocker`); empty when the absorbed formulation is exact."""
        reasons = {name: fold_blocker(getattr(self, name)) for name in self.folded_modules}
        return {name: reason for name, reason in reasons.items() if reason is not None}

    def uses_absorbed(self, inputs: VisionRememberInputs, num_tokens: int) -> bool:
        """The formulation this call runs: forced by `inputs.formulation`, else the one with fewer FLOPs; plain
        whenever the absorbed one would not be exact for the modules present (a forced `absorbed` then raises)."""
        if inputs.formulation == "plain":
            return False
        if inputs.normalized_features is None:
            if inputs.formulation == "absorbed":
                raise ValueError("the absorbed formulation needs VisionRememberInputs.normalized_features")
            return False
        blockers = self.fold_blockers()
        if inputs.formulation == "absorbed":
            if blockers:
                reasons = "; ".join(f"{name}: {reason}" for name, reason in blockers.items())
                raise ValueError(
                    "vision_remember_formulation='absorbed' folds the parameters of "
                    f"{', '.join(self.folded_modules)} without calling the modules, which is not exact for the "
                    f"modules present ({reasons}). Set vision_remember_formulation='auto' (runs the plain "
                    "formulation for wrapped, quantised, offloaded or hooked modules) or 'plain'."
                )
            return True
        if blockers:
            return False
        flops = self.formulation_flops(inputs, num_tokens)
        return flops["absorbed"] < flops["plain"]

    def forward(self, tokens: torch.Tensor, inputs: VisionRememberInputs) -> torch.Tensor:
        """`(Nv, d) -> (Nv, d)`."""
        absorbed = self.uses_absorbed(inputs, tokens.shape[0])
        attended = self.attend_absorbed(tokens, inputs) if absorbed else self.attend_plain(tokens, inputs)
        return self.o_proj(attended)

    def _feature_sizes(self, inputs: VisionRememberInputs) -> tuple[int, int, int]:
        """`(cells in the batch, feature width C, VR width d)`."""
        return inputs.features.shape[0] * inputs.features.shape[1], self.feature_size, self.hidden_size


def _softmax_weights(scores: torch.Tensor, valid: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
    """Masked softmax over the last axis (in fp32, like SDPA), times the saliency of each key."""
    probs = scores.float().masked_fill(~valid, float("-inf")).softmax(-1).to(scores.dtype)
    return probs * saliency


class TokenFeatureLocalAttention(TokenFeatureAttention):
    """`sela`: each token attends to its window of the multi-level features, values weighted by saliency."""

    reads_windows = True

    @classmethod
    def check_config(cls, config) -> None:
        check_window(
            config.token_grid_size,
            config.patch_grid_size,
            config.vision_remember_window_size,
            config.vision_remember_window_layout,
        )

    def attend_plain(self, tokens: torch.Tensor, inputs: VisionRememberInputs) -> torch.Tensor:
        keys, values = self.keys_values(inputs, tokens)
        window = inputs.window_index.to(tokens.device)
        shape = (*window.shape, self.num_heads, self.head_dim)  # (Nv, L, H, hd)
        keys = keys.flatten(0, 1)[window].view(shape).transpose(1, 2)
        values = values.flatten(0, 1)[window].view(shape).transpose(1, 2)
        mask = inputs.window_valid.to(tokens.device)[:, None, None, :]
        attended = F.scaled_dot_product_attention(self.queries(tokens)[:, :, None], keys, values, attn_mask=mask)
        return attended.reshape(tokens.shape)

    def attend_absorbed(self, tokens: torch.Tensor, inputs: VisionRememberInputs) -> torch.Tensor:
        window = inputs.window_index.to(tokens.device)
        normalized = inputs.normalized_features.to(tokens.device, tokens.dtype).flatten(0, 1)
        cells = normalized[window]  # (Nv, L, C)
        queries, key_bias = self.absorbed_queries(tokens)
        scores = (torch.einsum("nhc,nlc->nhl", queries, cells) + key_bias[..., None]) * self.head_dim**-0.5
        saliency = inputs.saliency.to(tokens.device, tokens.dtype).flatten()[window]
        valid = inputs.window_valid.to(tokens.device)
        weights = _softmax_weights(scores, valid[:, None, :], saliency[:, None, :])  # (Nv, H, L)
        return self.absorbed_values(torch.einsum("nhl,nlc->nhc", weights, cells), weights.sum(-1))

    def formulation_flops(self, inputs: VisionRememberInputs, num_tokens: int) -> dict[str, int]:
        cells, width, hidden = self._feature_sizes(inputs)
        window = inputs.window_index.shape[1]
        return {
            "plain": 4 * cells * width * hidden + 4 * num_tokens * window * hidden,
            "absorbed": 4 * num_tokens * hidden * width + 4 * num_tokens * self.num_heads * window * width,
        }


class GroupedTokenFeatureAttention(TokenFeatureAttention):
    """Dense cross-attention within groups: every token attends to every feature cell of its group (one SDPA call
    over `(groups, max tokens)` x `(groups, max cells)`, padded cells masked). Subclasses define `groups`."""

    def groups(self, inputs: VisionRememberInputs, device):
        """`(token_group, token_slot, max_tokens, cell_group, cell_slot, max_cells, num_groups)`."""
        raise NotImplementedError

    @staticmethod
    def _scatter(rows: torch.Tensor, group: torch.Tensor, slot: torch.Tensor, shape: tuple) -> torch.Tensor:
        grouped = rows.new_zeros(*shape, *rows.shape[1:])
        grouped[group, slot] = rows
        return grouped

    def _grouped_attention(self, queries, keys, values, inputs, scale=None):
        """`queries (Nv, H, e)`, `keys (cells, H|1, e)`, `values (cells, H|1, e')` -> `(Nv, H, e')`."""
        token_group, token_slot, max_tokens, cell_group, cell_slot, max_cells, num_groups = self.groups(
            inputs, queries.device
        )
        present = torch.zeros(num_groups, max_cells, dtype=torch.bool, device=queries.device)
        present[cell_group, cell_slot] = True
        q = self._scatter(queries, token_group, token_slot, (num_groups, max_tokens)).transpose(1, 2)
        k = self._scatter(keys, cell_group, cell_slot, (num_groups, max_cells)).transpose(1, 2)
        v = self._scatter(values, cell_group, cell_slot, (num_groups, max_cells)).transpose(1, 2)
        heads = queries.shape[1]
        k, v = k.expand(-1, heads, -1, -1), v.expand(-1, heads, -1, -1)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=present[:, None, None, :], scale=scale)
        return attended.transpose(1, 2)[token_group, token_slot]

    def attend_plain(self, tokens: torch.Tensor, inputs: VisionRememberInputs) -> torch.Tensor:
        keys, values = self.keys_values(inputs, tokens)
        split = (-1, self.num_heads, self.head_dim)
        attended = self._grouped_attention(self.queries(tokens), keys.reshape(split), values.reshape(split), inputs)
        return attended.reshape(tokens.shape)

    def attend_absorbed(self, tokens: torch.Tensor, inputs: VisionRememberInputs) -> torch.Tensor:
        normalized = inputs.normalized_features.to(tokens.device, tokens.dtype).flatten(0, 1)  # (cells, C)
        saliency = inputs.saliency.to(tokens.device, tokens.dtype).flatten()[:, None]
        values = torch.cat((normalized * saliency, saliency), dim=-1)  # the last column sums the weights
        keys = torch.cat((normalized, torch.ones_like(saliency)), dim=-1)  # the last column adds the key bias
        queries, key_bias = self.absorbed_queries(tokens)
        queries = torch.cat((queries, key_bias[..., None]), dim=-1)
        attended = self._grouped_attention(queries, keys[:, None], values[:, None], inputs, scale=self.head_dim**-0.5)
        return self.absorbed_values(attended[..., :-1], attended[..., -1])

    def formulation_flops(self, inputs: VisionRememberInputs, num_tokens: int) -> dict[str, int]:
        cells, width, hidden = self._feature_sizes(inputs)
        *_, max_tokens, _, _, max_cells, num_groups = self.groups(inputs, "cpu")
        pairs = num_groups * max_tokens * max_cells
        return {
            "plain": 4 * cells * width * hidden + 4 * pairs * hidden,
            "absorbed": 4 * num_tokens * hidden * width + 4 * pairs * self.num_heads * width,
        }


class TokenFeatureGlobalAttention(GroupedTokenFeatureAttention):
    """`global` (paper Tab. 4b): every token of an image attends to every feature cell of that image, all tiles."""

    def groups(self, inputs: VisionRememberInputs, device):
        return (
            inputs.image_index.to(device), inputs.image_slot.to(device), inputs.max_image_tokens,
            inputs.cell_image.to(device), inputs.cell_image_slot.to(device), inputs.max_image_cells,
            inputs.num_images,
        )  # fmt: skip


class TokenFeatureTileAttention(GroupedTokenFeatureAttention):
    """`global_tile`: every token attends to every feature cell of its own tile."""

    def groups(self, inputs: VisionRememberInputs, device):
        num_tiles, cells_per_tile = inputs.features.shape[:2]
        cell_tile = torch.arange(num_tiles, device=device).repeat_interleave(cells_per_tile)
        cell_slot = torch.arange(cells_per_tile, device=device).repeat(num_tiles)
        return (
            inputs.token_tile.to(device), inputs.tile_slot.to(device), inputs.max_tile_tokens,
            cell_tile, cell_slot, cells_per_tile, num_tiles,
        )  # fmt: skip


__all__ = [
    "FORMULATIONS",
    "GroupedTokenFeatureAttention",
    "TokenFeatureAttention",
    "TokenFeatureGlobalAttention",
    "TokenFeatureLocalAttention",
    "TokenFeatureTileAttention",
    "fold_blocker",
]
