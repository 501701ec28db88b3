# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The models the benchmarks run (`bench model`, `decode`, `serving`): variants, presets, configs, inputs.

A variant is a projector (`PROJECTORS`) with or without Vision Remember (VR, an interaction of `VR_INTERACTIONS`,
before decoder layers 1 and 4), named `PROJECTOR[+INTERACTION[:MODIFIER]...]` (`parse_variant`, the one parser):

- `:w<N>`: VR width `N` (default: the config's, the multi-level feature width, 3 x 1024 = 3072 for CLIP-L);
- `:v1`: no token self-attention (the paper's v1; default: with it, v2);
- `:plain` / `:absorbed`: the cross-attention's formulation (default `auto`: the one with fewer FLOPs per call).

E.g. `adaptive_avg_pool+sela` (the default model), `adaptive_avg_pool+sela:v1:plain`, `adaptive_avg_pool+sela:w1024`.
The variants of one run share one copy of the tower, decoder and head weights (`share_weights`).
"""

import argparse
from dataclasses import dataclass

import torch

from llava_vr import LlavaVRConfig, LlavaVRForConditionalGeneration
from llava_vr.packing_llava_vr import grid_pinpoints
from llava_vr.projectors_llava_vr import PROJECTOR_CLASSES
from llava_vr.registries_llava_vr import PROJECTORS, VR_INTERACTIONS
from llava_vr.testing_utils import IMAGE_TOKEN_ID, tiny_text_config, tiny_vision_config

CLIP_L_336 = dict(
    model_type="clip_vision_model",
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
    projection_dim=768,
    hidden_act="quick_gelu",
)
QWEN2 = {
    "0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
}
QWEN2_COMMON = dict(
    model_type="qwen2", max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, use_sliding_window=False
)

POOL, MLP = "adaptive_avg_pool", "mlp"
VR_LAYERS = [1, 4]  # decoder layers with VR in the VR variants
FORMULATION_MODIFIERS = ("plain", "absorbed")


@dataclass(frozen=True)
class Variant:
    """One benchmark variant: a projector, and VR's interaction (None: no VR), width (None: the config's default),
    token self-attention and cross-attention formulation."""

    projector: str
    interaction: str | None = None
    width: int | None = None
    self_attention: bool = True
    formulation: str = "auto"

    @property
    def name(self) -> str:
        """The canonical name: `PROJECTOR[+INTERACTION][:w<N>][:v1][:plain|:absorbed]`."""
        if self.interaction is None:
            return self.projector
        modifiers = [f"w{self.width}"] * (self.width is not None) + ["v1"] * (not self.self_attention)
        modifiers += [self.formulation] * (self.formulation != "auto")
        return ":".join([f"{self.projector}+{self.interaction}", *modifiers])

    @property
    def vr(self) -> str:
        return self.interaction or "none"

    def with_(self, **changes) -> "Variant":
        return Variant(**{**self.__dict__, **changes})

    def config_kwargs(self) -> dict:
        """The `LlavaVRConfig` settings of this variant (VR off: `vision_remember_layers=[]`)."""
        kwargs = dict(
            projector_type=self.projector,
            vision_remember_layers=list(VR_LAYERS) if self.interaction else [],
            vision_remember_interaction=self.interaction or "sela",
            vision_remember_self_attention=self.self_attention,
            vision_remember_formulation=self.formulation,
        )
        if self.width is not None:
            kwargs["vision_remember_hidden_size"] = self.width
        return kwargs


def parse_variant(name: str) -> Variant:
    """`PROJECTOR[+INTERACTION[:MODIFIER]...]` -> `Variant` (modifiers in any order, each at most once; see the
    module docstring). Raises `ValueError` naming what is wrong."""
    head, *modifiers = name.split(":")
    projector, _, interaction = head.partition("+")
    if projector not in PROJECTORS:
        raise ValueError(f"{name!r}: unknown projector {projector!r} (one of {', '.join(PROJECTORS)})")
    if interaction and interaction not in VR_INTERACTIONS:
        raise ValueError(f"{name!r}: unknown VR interaction {interaction!r} (one of {', '.join(VR_INTERACTIONS)})")
    if interaction and not PROJECTOR_CLASSES[projector].tokens_at_grid_cells:
        raise ValueError(f"{name!r}: {projector!r} has no Vision Remember partner (its tokens are not grid cells)")
    if modifiers and not interaction:
        raise ValueError(f"{name!r}: modifiers need Vision Remember (PROJECTOR+INTERACTION:MODIFIER)")
    settings = {}
    for modifier in modifiers:
        if modifier in FORMULATION_MODIFIERS:
            key, value = "formulation", modifier
        elif modifier == "v1":
            key, value = "self_attention", False
        elif modifier[:1] == "w" and modifier[1:].isdigit() and int(modifier[1:]) > 0:
            key, value = "width", int(modifier[1:])
        else:
            raise ValueError(f"{name!r}: unknown modifier {modifier!r} (w<N>, v1, plain, absorbed)")
        if key in settings:
            raise ValueError(f"{name!r}: {key} given twice")
        settings[key] = value
    return Variant(projector, interaction or None, **settings)


def variant_argument(name: str) -> str:
    """`argparse` type of `--variants`: the canonical name of a valid variant, or `all`."""
    if name == "all":
        return name
    try:
        return parse_variant(name).name
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


VR_MAIN = f"{POOL}+sela"  # the default model: paper width, token self-attention (v2), formulation auto (absorbed)
VR_V1 = f"{VR_MAIN}:v1"  # the paper's v1 (all its tables)
# the paper-width comparison: no compression, pooling alone, pooling + SELA at the paper's width with and without
# token self-attention, each with the default (auto = absorbed for SELA) and the plain formulation, and at the old
# narrow width 1024
WIDTH_COMPARISON = [
    MLP,
    POOL,
    VR_MAIN,
    f"{VR_MAIN}:plain",
    VR_V1,
    f"{VR_V1}:plain",
    f"{VR_MAIN}:w1024",
    f"{VR_MAIN}:w1024:v1",
]
# the named variants (`--variants all`), baselines first: every projector alone, pooling + every interaction, the
# other compressing projectors + sela, the paper-width comparison
VARIANTS = {
    name: parse_variant(name)
    for name in [
        *PROJECTORS,
        *(f"{POOL}+{interaction}" for interaction in VR_INTERACTIONS),
        *(
            f"{projector}+sela"
            for projector in PROJECTORS
            if projector not in (MLP, POOL) and PROJECTOR_CLASSES[projector].tokens_at_grid_cells
        ),
        *WIDTH_COMPARISON,
    ]
}
# the default of the presets at real widths: the paper-width comparison and the image-wide and the sampled
# interactions at the default settings (`--variants all`: every named variant)
COMPARISON_VARIANTS = [*WIDTH_COMPARISON, f"{POOL}+global", f"{POOL}+deformable"]


def variant_order(name: str) -> tuple[int, str]:
    """Sort key: the named variants in `VARIANTS` order (baselines first), then the others by name."""
    return (list(VARIANTS).index(name), "") if name in VARIANTS else (len(VARIANTS), name)


# `targets`: the preset has real widths, so the efficiency targets (`model_benchmark.TARGETS`) apply to its results
PRESETS = {
    # CI smoke test: 56-px tiles of 4x4 patches (16 tokens per tile for `mlp`, 2x2 = 4 pooled), seconds in total.
    # The tests' tiny tower and LLM (`llava_vr.testing_utils`).
    "tiny": dict(
        vision=tiny_vision_config(),
        text=tiny_text_config(),
        feature_layers=[1, 2, 3],
        image_token_index=IMAGE_TOKEN_ID,
        cpu_dtype="float32",
        repeats=1,
        warmup=0,
        decode_tokens=2,
        reference_depth=None,
        threads=1,
    ),
    # Real widths (CLIP-L/14-336 tower width and patch grid, Qwen2-0.5B width, real vocab), 1/4 of the depths of
    # Qwen2-0.5B + CLIP-L (6 tower layers, 6 decoder layers): tower : LLM cost as in the real 0.5B model. VR keeps its
    # real size (2 modules), so its share of TTFT is larger than at full depth; the results add a full-depth
    # estimate (tower and decoder-layer times scaled to 24 + 24 layers) next to the measured numbers.
    "cpu-small": dict(
        vision={**CLIP_L_336, "num_hidden_layers": 6},
        text={**QWEN2_COMMON, **QWEN2["0.5b"], "num_hidden_layers": 6},
        feature_layers=[3, 4, 5],
        cpu_dtype="bfloat16",
        repeats=3,
        warmup=0,
        decode_tokens=8,
        reference_depth={"vision": 24, "text": 24},
        variants=COMPARISON_VARIANTS,
        targets=True,
    ),
    **{
        f"qwen2-{size}": dict(
            vision=CLIP_L_336,
            text={**QWEN2_COMMON, **QWEN2[size]},
            feature_layers=[13, 18, 23],
            cpu_dtype="bfloat16",
            repeats=5,
            warmup=1,
            decode_tokens=16,
            reference_depth=None,
            variants=COMPARISON_VARIANTS,
            targets=True,
        )
        for size in QWEN2
    },
}


def build_config(preset: dict, variant: str, attn: str, vision_layers=None, text_layers=None) -> LlavaVRConfig:
    """The config of `variant` (any name `parse_variant` reads) at the preset's shapes (depths cut to `vision_layers`
    / `text_layers` when given; the VR feature layers scale with the tower depth)."""
    vision = dict(preset["vision"])
    text = dict(preset["text"])
    feature_layers = list(preset["feature_layers"])
    if vision_layers:
        feature_layers = [max(1, round(i * vision_layers / vision["num_hidden_layers"])) for i in feature_layers]
        vision["num_hidden_layers"] = vision_layers
    if text_layers:
        text["num_hidden_layers"] = text_layers
    kwargs = dict(
        vision_config=vision,
        text_config=text,
        image_grid_pinpoints=grid_pinpoints(vision["image_size"], 6, 6),
        vision_aspect_ratio="anyres_max_9",
        vision_remember_feature_layers=feature_layers,
        attn_implementation=attn,
        **parse_variant(variant).config_kwargs(),
    )
    if "image_token_index" in preset:
        kwargs["image_token_index"] = preset["image_token_index"]
    return LlavaVRConfig(**kwargs)


def variant_fields(variant: str, config: LlavaVRConfig) -> dict:
    """A result row's description of `variant` (built as `config`): projector, VR interaction (`none` without VR),
    and VR's layers, resolved width, token self-attention and configured formulation (None without VR)."""
    spec = parse_variant(variant)
    vr = spec.interaction is not None
    return {
        "projector": spec.projector,
        "vr": spec.vr,
        "vr_layers": list(config.vision_remember_layers),
        "vr_width": config.vision_remember_hidden_size if vr else None,
        "vr_self_attention": config.vision_remember_self_attention if vr else None,
        "vr_formulation": config.vision_remember_formulation if vr else None,
    }


def build_model(config: LlavaVRConfig, device: torch.device, dtype: torch.dtype, seed: int):
    """Random weights, created directly on `device` in `dtype` (no float32 copy on the host first)."""
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaVRForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device).eval()


SHARED_MODULES = (  # identical in every variant: built once, shared by all variants' models
    "model.vision_tower",
    "model.language_model.embed_tokens",
    "model.language_model.layers",
    "model.language_model.norm",
    "model.language_model.rotary_emb",
    "lm_head",
)


def share_weights(model, base):
    """Points the parameters and buffers of `model`'s `SHARED_MODULES` and its image newline at `base`'s (same shapes:
    the variants differ only in projector and VR), so every variant runs the same weights and the process holds one
    copy. The modules stay the variant's own, with whatever hooks the model attached to them (saliency, tower hidden
    states)."""
    for path in SHARED_MODULES:
        own, shared = model.get_submodule(path), base.get_submodule(path)
        for name, tensor in [*shared.named_parameters(), *shared.named_buffers()]:
            owner, _, leaf = name.rpartition(".")
            setattr(own.get_submodule(owner), leaf, tensor)
    model.model.image_newline = base.model.image_newline
    return model


def crop_grid(crops: int) -> tuple[int, int]:
    """Most square `rows x cols` factorisation (rows <= cols)."""
    rows = max(r for r in range(1, int(crops**0.5) + 1) if crops % r == 0)
    return rows, crops // rows


def make_inputs(model, crops: int, text_tokens: int, device, dtype, seed: int):
    """One image of `crops` AnyRes crops (`rows x cols` tiles' worth of pixels) inside `text_tokens` random text
    tokens, batch 1: the model kwargs and the image's `AnyResLayout`."""
    config = model.config
    tile = config.vision_config.image_size
    rows, cols = crop_grid(crops)
    image_sizes = torch.tensor([[rows * tile, cols * tile]])
    (layout,) = model.model.image_layouts(image_sizes)
    if layout.crop_rows * layout.crop_cols != crops:
        raise ValueError(f"{crops} crops: the pinpoints gave a {layout.crop_rows}x{layout.crop_cols} grid")
    generator = torch.Generator().manual_seed(seed)
    vocab = min(config.text_config.vocab_size, 32000)
    text = torch.randint(1, vocab, (text_tokens,), generator=generator)
    text[text == config.image_token_id] = 1
    before, after = text[: text_tokens // 2], text[text_tokens // 2 :]
    image = torch.full((layout.num_tokens,), config.image_token_id, dtype=torch.long)
    input_ids = torch.cat([before, image, after])[None]
    pixel_values = torch.randn(1, layout.num_tiles, 3, tile, tile, generator=generator)
    inputs = {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "pixel_values": pixel_values.to(device, dtype),
        "image_sizes": image_sizes.to(device),
    }
    return inputs, layout


def config_summary(config: LlavaVRConfig) -> dict:
    """The shapes of a run's models (the `config` block of `meta`)."""
    v, t = config.vision_config, config.text_config
    return {
        "vision": {
            k: getattr(v, k)
            for k in (
                "model_type",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "image_size",
                "patch_size",
            )
        },
        "text": {
            k: getattr(t, k)
            for k in (
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "vocab_size",
            )
        },
        "vision_remember_layers_when_on": list(VR_LAYERS),
        "vision_remember_feature_layers": list(config.vision_remember_feature_layers),
        "vision_remember_hidden_size": config.vision_remember_hidden_size,
        "vision_remember_num_heads": config.vision_remember_num_heads,
        "vision_aspect_ratio": config.vision_aspect_ratio,
        "image_token_index": config.image_token_index,
    }


__all__ = [
    "COMPARISON_VARIANTS",
    "MLP",
    "POOL",
    "PRESETS",
    "SHARED_MODULES",
    "VARIANTS",
    "VR_MAIN",
    "VR_V1",
    "WIDTH_COMPARISON",
    "Variant",
    "build_config",
    "build_model",
    "config_summary",
    "crop_grid",
    "make_inputs",
    "parse_variant",
    "share_weights",
    "variant_argument",
    "variant_fields",
    "variant_order",
]
