# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The cases of the Vision Remember (VR) micro-benchmark: presets, one VR module with random weights, synthetic inputs.

One image of `tiles` tiles of `g x g` tokens (12 x 12 = 144 for CLIP-336 with 2x2 pooling) over `G x G` feature
cells (24 x 24 = 576), no newline tokens, `TEXT_TOKENS` text tokens around it.
"""

from dataclasses import dataclass

import torch

from llava_vr import LlavaVRConfig
from llava_vr.vision_remember_llava_vr import VisionRemember, VisionRememberFeatures, VisionRememberInputs

PRESETS = {
    "tiny": dict(vision_hidden=32, vision_heads=4, image_size=56, patch_size=14, text_hidden=[64], widths=[96, 32],
                 formulations=["absorbed", "plain"], tiles=[1, 2, 4], cpu_dtype="float32", repeats=2, warmup=1,
                 matmul_sizes=(256,), threads=1),
    # CLIP-ViT-L/14-336 features (1024 x 3 levels, 16 heads, 24x24 cells, 12x12 tokens per tile) into Qwen2-0.5B's
    # width (896); VR at the paper's width (3072, the multi-level feature width) and the old narrow one (1024), each
    # cross-attention formulation; 2 / 5 / 10 tiles = 1 / 4 / 9 AnyRes crops and the base tile.
    "real": dict(vision_hidden=1024, vision_heads=16, image_size=336, patch_size=14, text_hidden=[896],
                 widths=[3072, 1024], formulations=["absorbed", "plain"], tiles=[2, 5, 10], cpu_dtype="bfloat16",
                 repeats=5, warmup=1, matmul_sizes=(1024, 2048, 4096)),
}
TEXT_TOKENS = 32


def build_config(preset: dict, text_hidden: int, interaction: str, width: int | None = None,
                 formulation: str = "auto") -> LlavaVRConfig:
    """A config whose VR (width `width`, default: the multi-level feature width) reads 3 feature levels of the
    preset's tower into an LLM of width `text_hidden`, computing its cross-attention in `formulation`."""
    return LlavaVRConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=preset["vision_hidden"],
                           intermediate_size=4 * preset["vision_hidden"], num_hidden_layers=4,
                           num_attention_heads=preset["vision_heads"], image_size=preset["image_size"],
                           patch_size=preset["patch_size"]),
        text_config=dict(model_type="qwen2", hidden_size=text_hidden, intermediate_size=4 * text_hidden,
                         num_hidden_layers=2, num_attention_heads=max(1, text_hidden // 64), num_key_value_heads=1,
                         vocab_size=1000),
        image_token_index=999,
        projector_type="adaptive_avg_pool",
        vision_remember_layers=[1],
        vision_remember_feature_layers=[1, 2, 3],
        vision_remember_interaction=interaction,
        vision_remember_hidden_size=width,
        vision_remember_formulation=formulation,
    )


def build_module(config, device, dtype, seed=0) -> VisionRemember:
    torch.manual_seed(seed)
    module = VisionRemember(config)  # plain nn init: random, non-zero output projection (a "trained" VR)
    return module.to(device, dtype).eval()


def synthetic_inputs(config, tiles: int, device, dtype, seed=0):
    """Hidden states `(1, S, D)` with `tiles * g*g` vision tokens after `TEXT_TOKENS // 2` text tokens, and the
    arguments of `VisionRemember.prepare_inputs` over `(tiles, G*G, 3C)` features (the same for every config with the
    same shapes and `seed`)."""
    generator = torch.Generator().manual_seed(seed)
    g, grid = config.token_grid_size, config.patch_grid_size
    tokens = tiles * g * g
    seq = tokens + TEXT_TOKENS
    hidden = torch.randn(1, seq, config.text_config.hidden_size, generator=generator).to(device, dtype)
    mask = torch.zeros(1, seq, dtype=torch.bool)
    mask[0, TEXT_TOKENS // 2 : TEXT_TOKENS // 2 + tokens] = True
    features = torch.randn(tiles, grid * grid, config.vision_remember_feature_size, generator=generator)
    saliency = torch.rand(tiles, grid * grid, generator=generator)
    tile, row, col = torch.meshgrid(torch.arange(tiles), torch.arange(g), torch.arange(g), indexing="ij")
    cells = torch.stack((tile, row, col), -1).reshape(-1, 3)
    image_features = VisionRememberFeatures(
        [features.to(device, dtype)], [saliency.to(device, dtype)], [cells.to(device)]
    )
    args = (mask.to(device), image_features, config)
    return hidden, args


@dataclass
class Case:
    """One (LLM width, VR width, interaction, formulation, tiles) case: its result row, module and inputs (`inputs`
    built from `build_args`), and the module's output of the instrumented pass (`output`, compared across
    formulations)."""

    row: dict
    module: VisionRemember
    hidden: torch.Tensor
    build_args: tuple
    inputs: VisionRememberInputs
    output: torch.Tensor | None = None


__all__ = ["Case", "PRESETS", "TEXT_TOKENS", "build_config", "build_module", "synthetic_inputs"]
