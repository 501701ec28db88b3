# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Token-feature cross-attention of Vision Remember: queries from the vision tokens, keys and values from the
multi-level vision features. `sela` (a window per token), `global` (all cells of the token's image) and
`global_tile` (all cells of the token's tile); `deformable` lives in `deformable_attention_llava_vr.py`.

Two exact formulations of the same function, chosen per call by estimated time (`vision_remember_formulation="auto"`,
`formulation_costs`: FLOPs plus the bytes each moves, weighed by the device's and dtype's balance):
- **plain**: `K = W_k LN(f) + b_k` and `V = W_v LN(f) + b_v` for every feature cell, then attention.
- **absorbed**: keys and values are linear in the features, so per head `q·(W_k LN(f)) = (W_kᵀ q)·LN(f)` and
  `Σ a·s·(W_v LN(f) + b_v) = W_v (Σ a·s·LN(f)) + b_v Σ a·s`. The queries move to the feature width instead of every
  feature cell moving to VR's width: the projection work drops by the cells a token reads per query. LayerNorm's
  affine folds into the projections (`W diag(γ)`, bias `W β + b`); the key's bias is constant per token and head (it
  cancels in the softmax, and is kept only so every parameter gets its gradient); the affine-free normalisation is
  computed once per forward for all VR layers (`VisionRememberInputs.normalized_features`). Its `(tokens, heads, C)`
  intermediates are computed in blocks (of tokens for `sela`, of heads for the grouped interactions) of at most
  `ABSORBED_BLOCK_BYTES` each, so they stay in the cache between the matmuls that write and read them; the block
  count follows the problem (`absorbed_blocks`: one block for small inputs, a handful at 9 AnyRes crops), never a
  loop per token.

The absorbed formulation reads the parameters of `k_proj`, `v_proj` and `feature_norm` instead of calling them, so it
runs only where that is exact (`fold_blocker`): the modules are exactly `nn.Linear` / `nn.LayerNorm` with plain,
materialised parameters and nothing hooked on them. PEFT adapters (a wrapper), bitsandbytes and `quantize_dynamic`
(replaced Linears), torchao (quantised tensor-subclass weights), Accelerate offload (`_hf_hook`, weights on `meta`),
DeepSpeed ZeRO-3 (hooks) and any forward/backward hook make `auto` run the plain formulation, which calls the modules
(same outputs and gradients as their own forward); a forced `absorbed` is refused with a `ValueError`. The check
depends only on the modules, never on the image, so `auto` treats every image of a model alike.
"""

import functools

import torch
from torch import nn
from torch.nn import functional as F

from .feature_windows_llava_vr import check_window
from .registries_llava_vr import FORMULATIONS, check_implemented
from .vision_remember_inputs_llava_vr import FEATURE_NORM_EPS, VisionRememberInputs

# `TokenFeatureAttention.uses_absorbed` runs `attend_absorbed` or `attend_plain`, forced or (`auto`) by cost
check_implemented(FORMULATIONS, ("auto", "absorbed", "plain"), "vision_remember_formulation")

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")

ABSORBED_BLOCK_BYTES = 16 * 2**20
"""Bytes of one block of one of the absorbed formulation's `(tokens, heads, C)` intermediates: a share of a server
CPU's L3 cache (32 MiB on the reference Zen 4) or a GPU's L2, so that a block's queries and attended features stay
there between the matmuls that write and read them."""
MAX_ABSORBED_BLOCKS = 16
"""At most this many blocks (a block then exceeds `ABSORBED_BLOCK_BYTES`): the Python overhead stays a handful of
iterations, never one per token."""

MACHINE_BALANCE = {
    ("cpu", "float32"): 37.0,
    ("cpu", "bfloat16"): 155.0,
    ("cpu", "float16"): 155.0,
    ("cpu", "emulated"): 1.0,
    ("cuda", "float32"): 25.0,
    ("cuda", "bfloat16"): 300.0,
    ("cuda", "float16"): 300.0,
}
"""FLOPs that take as long as moving one byte through the cross-attention's memory-bound intermediates (gathers,
per-token batched products, einsum's copies), per device type and dtype: the matmul rate over the effective rate at
which those intermediates move. CPU: fitted to the reference Zen 4's one-thread runs of the unblocked formulations
(`benchmarks/reference_results/cpu/vision_remember_real_cpu*`: matmul 420 GFLOP/s in bfloat16, 99 in float32; the
intermediates at ~2.7 GB/s in both, which reproduces absorbed / plain = 0.54-0.82 for SELA and 2.4 for
`global_tile` at width 3072); `emulated`: a CPU without AVX-512 (no bfloat16 / float16 matmul units, where a half
matmul is tens of times slower than its bytes: FLOPs decide). CUDA: a datasheet estimate (H100: ~600 TFLOP/s in
bfloat16, ~50 in float32 without TF32, ~2 TB/s effective), not yet measured. Other devices use the float32 CPU
value."""
CACHED_BYTES_COST = 0.5
"""The cost of a byte of an intermediate that stays in the cache (a block of the absorbed formulation), relative to
one that streams through memory: the blocked absorbed SELA took 0.73x the unblocked one's time in float32 on a
2-core AVX2 box (`llava-vr bench vision-remember`), its intermediates being most of its bytes."""


BLOCK_OVERHEAD_FLOPS = {
    ("cpu", "float32"): 1.0e8,
    ("cpu", "bfloat16"): 4.0e8,
    ("cpu", "float16"): 4.0e8,
    ("cpu", "emulated"): 0.0,
    ("cuda", "float32"): 1.0e10,
    ("cuda", "bfloat16"): 7.0e10,
    ("cuda", "float16"): 7.0e10,
}
"""FLOPs that take as long as one more block of the absorbed formulation (~35 kernels and their views, whatever
their size), per device type and dtype. CPU bfloat16: fitted to a Zen 4 core's one-thread runs of SELA at width 1024,
where the absorbed formulation needs 12-16 blocks whatever the tile count (its `(Nv, H, C)` intermediates are 3x the
plain formulation's whole live set): 1.12 / 0.96 / 0.87 x plain at 2 / 5 / 10 tiles against a constant 0.90 by
FLOPs and bytes alone, ~1.4 ms per block (`llava-vr bench vision-remember --preset real --interactions sela`).
float32: the same time at a quarter of the rate; `emulated`: FLOPs decide. CUDA: a datasheet estimate (~5 us per
kernel launch), not measured."""


def _device_kind(device_type: str, dtype: torch.dtype) -> tuple[str, str]:
    """`(device type, dtype name)`, the key of the per-device constants; a half dtype on a CPU without AVX-512 is
    `emulated`."""
    name = str(dtype).removeprefix("torch.")
    if device_type == "cpu" and name in ("bfloat16", "float16"):
        if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
            name = "emulated"
    return device_type, name


@functools.cache
def machine_balance(device_type: str, dtype: torch.dtype) -> float:
    """`MACHINE_BALANCE` for this device type and dtype (deterministic: constants, no timing)."""
    return MACHINE_BALANCE.get(_device_kind(device_type, dtype), MACHINE_BALANCE[("cpu", "float32")])


@functools.cache
def block_overhead(device_type: str, dtype: torch.dtype) -> float:
    """`BLOCK_OVERHEAD_FLOPS` for this device type and dtype."""
    return BLOCK_OVERHEAD_FLOPS.get(_device_kind(device_type, dtype), BLOCK_OVERHEAD_FLOPS[("cpu", "float32")])


def absorbed_blocks(
    total: int, bytes_per_item: int, items: int | None = None, budget: int = ABSORBED_BLOCK_BYTES
) -> list[slice]:
    """`total` items (tokens or heads) in consecutive blocks: of `items` each when given, else of at most
    `min(budget, ABSORBED_BLOCK_BYTES)` of intermediates (`bytes_per_item` each; at least one item), at most
    `MAX_ABSORBED_BLOCKS` blocks."""
    if items is None:
        items = max(1, min(budget, ABSORBED_BLOCK_BYTES) // max(1, bytes_per_item))
        items = max(items, -(-total // MAX_ABSORBED_BLOCKS))
    items = max(1, items)
    return [slice(start, min(start + items, total)) for start in range(0, total, items)] or [slice(0, 0)]


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
    absorbed_block_items: int | None = None
    """Tokens (`sela`) or heads (grouped) per block of the absorbed formulation; `None`: sized from the problem
    (`absorbed_blocks`). Set on an instance to force a block size (tests, tuning)."""

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

    def split_folded(self, proj: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        """`proj`'s weight as `(H, hd, C)` (a view: no copy) and the folded bias `(H, hd)` of `proj ∘ feature_norm`;
        the LayerNorm's scale is applied to the normalised features instead (`folded` without its `d x C` copy)."""
        bias = proj.weight @ self.feature_norm.bias + proj.bias
        return proj.weight.view(self.num_heads, self.head_dim, -1), bias.view(self.num_heads, self.head_dim)

    def absorbed_queries(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(Nv, d) -> (Nv, H, C), (Nv, H)`: each head's query mapped to the feature space by its folded key weight,
        and its product with the folded key bias. That product is the same for every key of a query and cancels in
        the softmax; it is kept (`Nv * d` FLOPs) so that every parameter takes part in backward (DDP without
        `find_unused_parameters`) and the gradients match the plain formulation's."""
        weight, bias = self.folded(self.k_proj)
        queries = self.queries(tokens)
        return torch.einsum("nhd,hdc->nhc", queries, weight), (queries * bias).sum(-1)

    def absorbed_values(self, aggregated: torch.Tensor, weight_sum: torch.Tensor, folded=None) -> torch.Tensor:
        """`(Nv, H, C)` attention-and-saliency-weighted normalised features and `(Nv, H)` their weights' sum ->
        `(Nv, d)`, the attended values. `folded`: `self.folded(self.v_proj)` (sliced to the heads of `aggregated`)
        when already computed."""
        weight, bias = folded if folded is not None else self.folded(self.v_proj)
        attended = torch.einsum("nhc,hdc->nhd", aggregated, weight) + bias * weight_sum[..., None]
        return attended.flatten(1)

    def absorbed_block_slices(self, inputs: VisionRememberInputs, num_tokens: int, itemsize: int) -> list[slice]:
        """The blocks (of tokens or heads) `attend_absorbed` runs in for `itemsize`-byte tensors: one here (an
        interaction whose absorbed formulation does not block)."""
        return [slice(0, num_tokens)]

    def formulation_bytes(self, inputs: VisionRememberInputs, num_tokens: int, itemsize: int) -> dict | None:
        """Bytes the formulation-dependent part of one call moves through memory-bound intermediates:
        `{"plain": ..., "absorbed": ..., "absorbed_cached": ...}` (`absorbed_cached`: the part of the absorbed
        formulation's that its blocks keep in the cache), or `None` (FLOPs alone decide)."""
        return None

    def formulation_costs(self, inputs: VisionRememberInputs, num_tokens: int, device_type: str, dtype) -> dict:
        """`{"plain": ..., "absorbed": ...}` estimated time of one call in FLOP-equivalents: FLOPs plus
        `machine_balance` x bytes moved (`CACHED_BYTES_COST` x that for bytes that stay in the cache), plus
        `block_overhead` for each block of the absorbed formulation after its first. A roofline sum with constants
        per device type and dtype: the same problem, device and dtype always get the same choice."""
        costs = dict(self.formulation_flops(inputs, num_tokens))
        moved = self.formulation_bytes(inputs, num_tokens, dtype.itemsize)
        if moved is not None:
            balance = machine_balance(device_type, dtype)
            costs["plain"] += balance * moved["plain"]
            costs["absorbed"] += balance * (moved["absorbed"] + CACHED_BYTES_COST * moved["absorbed_cached"])
        blocks = len(self.absorbed_block_slices(inputs, num_tokens, dtype.itemsize))
        costs["absorbed"] += (blocks - 1) * block_overhead(device_type, dtype)
        return costs

    def formulation_flops(self, inputs: VisionRememberInputs, num_tokens: int) -> dict[str, int]:
        """FLOPs of the formulation-dependent part of one call: `{"plain": ..., "absorbed": ...}`."""
        raise NotImplementedError

    def fold_blockers(self) -> dict[str, str]:
        """`{module name: reason}` for each of `folded_modules` whose parameters the absorbed formulation may not
        read (see `fold_blocker`); empty when the absorbed formulation is exact."""
        reasons = {name: fold_blocker(getattr(self, name)) for name in self.folded_modules}
        return {name: reason for name, reason in reasons.items() if reason is not None}

    def uses_absorbed(self, inputs: VisionRememberInputs, num_tokens: int, like: torch.Tensor | None = None) -> bool:
        """The formulation this call runs: forced by `inputs.formulation`, else the cheaper by `formulation_costs`
        for `like`'s device and dtype (default: `v_proj`'s weight's); plain whenever the absorbed one would not be
        exact for the modules present (a forced `absorbed` then raises)."""
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
        like = self.v_proj.weight if like is None else like
        costs = self.formulation_costs(inputs, num_tokens, like.device.type, like.dtype)
        return costs["absorbed"] < costs["plain"]

    def forward(self, tokens: torch.Tensor, inputs: VisionRememberInputs) -> torch.Tensor:
        """`(Nv, d) -> (Nv, d)`."""
        absorbed = self.uses_absorbed(inputs, tokens.shape[0], tokens)
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
        """In blocks of tokens (`absorbed_blocks`): each block's `(n, H, C)` queries and attended features stay in
        the cache; every token reads only its own window, so the blocks are independent."""
        window = inputs.window_index.to(tokens.device)
        normalized = inputs.normalized_features.to(tokens.device, tokens.dtype).flatten(0, 1)
        saliency = inputs.saliency.to(tokens.device, tokens.dtype).flatten()
        valid = inputs.window_valid.to(tokens.device)
        key_weight, key_bias = self.split_folded(self.k_proj)  # the LayerNorm scale goes onto the cells
        value_folded = self.split_folded(self.v_proj)
        queries = self.queries(tokens)  # (Nv, H, hd)
        query_bias = (queries * key_bias).sum(-1)  # (Nv, H): see `absorbed_queries`
        attended = []
        for block in self.absorbed_block_slices(inputs, tokens.shape[0], tokens.element_size()):
            rows = window[block]
            cells = normalized[rows] * self.feature_norm.weight  # (n, L, C)
            mapped = torch.einsum("nhd,hdc->nhc", queries[block], key_weight)
            scores = (torch.einsum("nhc,nlc->nhl", mapped, cells) + query_bias[block, :, None]) * self.head_dim**-0.5
            weights = _softmax_weights(scores, valid[block, None, :], saliency[rows][:, None, :])  # (n, H, L)
            aggregated = torch.einsum("nhl,nlc->nhc", weights, cells)
            attended.append(self.absorbed_values(aggregated, weights.sum(-1), value_folded))
        return torch.cat(attended) if len(attended) > 1 else attended[0]

    def absorbed_block_slices(self, inputs: VisionRememberInputs, num_tokens: int, itemsize: int) -> list[slice]:
        """Blocks of tokens, each token's `(H, C)` intermediates `H * C * itemsize` bytes; a block at most an eighth
        of what the plain formulation holds at once (keys and values `2 x cells x d`, and their windows gathered per
        token `2 x Nv x L x d`): about four block-sized tensors are live at a time (queries mapped to the features,
        the attended features, einsum's copies), so the absorbed formulation needs no more memory than the plain one
        (one VR module, width 3072, 2 / 5 / 10 tiles: 17 / 42 / 85 MiB against 22 / 55 / 110; a quarter gave 27 MiB
        at 2 tiles). Sized against the keys alone, a 2-tile problem ran in 16 blocks of 18 tokens, whose small
        matmuls and ~35 ops each made the absorbed formulation barely faster than the plain one there."""
        cells, _, hidden = self._feature_sizes(inputs)
        window = inputs.window_index.shape[1]
        plain_live = 2 * (cells + num_tokens * window) * hidden * itemsize
        per_token = self.num_heads * self.feature_size * itemsize
        return absorbed_blocks(num_tokens, per_token, self.absorbed_block_items, plain_live // 8)

    def formulation_flops(self, inputs: VisionRememberInputs, num_tokens: int) -> dict[str, int]:
        cells, width, hidden = self._feature_sizes(inputs)
        window = inputs.window_index.shape[1]
        return {
            "plain": 4 * cells * width * hidden + 4 * num_tokens * window * hidden,
            "absorbed": 4 * num_tokens * hidden * width + 4 * num_tokens * self.num_heads * window * width,
        }

    def formulation_bytes(self, inputs: VisionRememberInputs, num_tokens: int, itemsize: int) -> dict:
        """Plain: the features normalised and read by both projections, keys and values written, weighted by
        saliency, gathered per window and read by the attention. Absorbed: the windows' cells gathered and read twice;
        the `(Nv, H, C)` queries and attended features written and read, the latter once more copied by einsum
        (cached: they live in one block at a time)."""
        cells, width, hidden = self._feature_sizes(inputs)
        window = inputs.window_index.shape[1]
        return {
            "plain": itemsize * (4 * cells * width + 4 * cells * hidden + 6 * num_tokens * window * hidden),
            "absorbed": itemsize * 3 * num_tokens * window * width,
            "absorbed_cached": itemsize * 6 * num_tokens * self.num_heads * width,
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

    def _grouped_attention(self, queries, keys, values, inputs, scale=None, groups=None):
        """`queries (Nv, H, e)`, `keys (cells, H|1, e)`, `values (cells, H|1, e')` -> `(Nv, H, e')`. `groups`:
        `self.groups(inputs, device)` when already computed."""
        groups = self.groups(inputs, queries.device) if groups is None else groups
        token_group, token_slot, max_tokens, cell_group, cell_slot, max_cells, num_groups = groups
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
        """In blocks of heads (`absorbed_blocks`): each block's `(groups, tokens, heads, C)` queries and attended
        features stay in the cache (the heads share the keys and values: the normalised features)."""
        normalized = inputs.normalized_features.to(tokens.device, tokens.dtype).flatten(0, 1)  # (cells, C)
        normalized = normalized * self.feature_norm.weight  # the LayerNorm scale (`split_folded`)
        saliency = inputs.saliency.to(tokens.device, tokens.dtype).flatten()[:, None]
        values = torch.cat((normalized * saliency, saliency), dim=-1)[:, None]  # the last column sums the weights
        keys = torch.cat((normalized, torch.ones_like(saliency)), dim=-1)[:, None]  # the last adds the key bias
        key_weight, key_bias = self.split_folded(self.k_proj)
        value_weight, value_bias = self.split_folded(self.v_proj)
        queries = self.queries(tokens)  # (Nv, H, hd)
        groups = self.groups(inputs, tokens.device)
        attended = []
        for heads in self.absorbed_block_slices(inputs, tokens.shape[0], tokens.element_size()):
            mapped = torch.einsum("nhd,hdc->nhc", queries[:, heads], key_weight[heads])
            mapped = torch.cat((mapped, (queries[:, heads] * key_bias[heads]).sum(-1)[..., None]), dim=-1)
            block = self._grouped_attention(mapped, keys, values, inputs, self.head_dim**-0.5, groups)
            folded = (value_weight[heads], value_bias[heads])
            attended.append(
                self.absorbed_values(block[..., :-1], block[..., -1], folded).unflatten(1, (-1, self.head_dim))
            )
        return (torch.cat(attended, dim=1) if len(attended) > 1 else attended[0]).flatten(1)

    def absorbed_block_slices(self, inputs: VisionRememberInputs, num_tokens: int, itemsize: int) -> list[slice]:
        """Blocks of heads, each head's padded `(groups, tokens, C)` queries `groups * tokens * C * itemsize` bytes."""
        *_, max_tokens, _, _, _, num_groups = self.groups(inputs, "cpu")
        cells, _, hidden = self._feature_sizes(inputs)
        per_head = num_groups * max_tokens * self.feature_size * itemsize
        return absorbed_blocks(self.num_heads, per_head, self.absorbed_block_items, cells * hidden * itemsize // 4)

    def formulation_flops(self, inputs: VisionRememberInputs, num_tokens: int) -> dict[str, int]:
        cells, width, hidden = self._feature_sizes(inputs)
        *_, max_tokens, _, _, max_cells, num_groups = self.groups(inputs, "cpu")
        pairs = num_groups * max_tokens * max_cells
        return {
            "plain": 4 * cells * width * hidden + 4 * pairs * hidden,
            "absorbed": 4 * num_tokens * hidden * width + 4 * pairs * self.num_heads * width,
        }

    def formulation_bytes(self, inputs: VisionRememberInputs, num_tokens: int, itemsize: int) -> dict:
        """Plain: the features normalised and read by both projections, keys and values written, scattered into
        groups and read by the attention. Absorbed: the attention reads the shared `(cells, C)` keys and values once
        per head; the `(Nv, H, C)` queries and attended features are written, scattered / gathered and read (cached:
        one block of heads at a time)."""
        cells, width, hidden = self._feature_sizes(inputs)
        *_, max_tokens, _, _, max_cells, num_groups = self.groups(inputs, "cpu")
        padded_cells, padded_tokens = num_groups * max_cells, num_groups * max_tokens
        return {
            "plain": itemsize * (4 * cells * width + 4 * cells * hidden + 6 * padded_cells * hidden),
            "absorbed": itemsize * (4 * cells * width + 2 * self.num_heads * padded_cells * width),
            "absorbed_cached": itemsize * 8 * self.num_heads * max(num_tokens, padded_tokens) * width,
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
