# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""What a conversion builds, gathered before any tensor is read: the LLaVA-VR config values of a source.

`transformers_plan` reads a Transformers LLaVA-NeXT / OneVision config; the lmms-lab plan is in `lmms_lab.py`;
`build_config` adds the command's projector and Vision Remember choices and validates the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import AutoConfig

from ..configuration_llava_vr import LlavaVRConfig
from ..hub.refusals import LlavaVRRefusal, one_line
from .sources import Source

TOWER_NAMES = {"clip": "CLIP", "siglip": "SigLIP"}


@dataclass
class Plan:
    """What the conversion builds, gathered before any tensor is read."""

    values: dict  # LlavaVRConfig kwargs
    tower: str  # "clip" | "siglip"
    needs_image_token: bool = False  # lmms-lab: add <image> to the tokenizer
    notes: list[str] = field(default_factory=list)


def check_llm(model_type: str, architectures=None) -> None:
    """Refuses a non-Qwen2 LLM."""
    if model_type != "qwen2":
        raise LlavaVRRefusal(
            f"the source's LLM is {model_type!r}"
            + (f" ({', '.join(architectures)})" if architectures else "")
            + "; LLaVA-VR's decoder is Qwen2, only Qwen2-based checkpoints convert"
        )


def check_tower(model_type: str) -> str:
    """`clip_vision_model` -> `clip`, `siglip_vision_model` -> `siglip`; refuses other towers."""
    if model_type not in ("clip_vision_model", "siglip_vision_model"):
        raise LlavaVRRefusal(f"vision tower {model_type!r} is not supported (CLIP or SigLIP vision models only)")
    return model_type.split("_")[0]


def transformers_plan(src: Source) -> Plan:
    """The config values of a Transformers LLaVA-NeXT (every image tiled) or OneVision (`anyres_max_N`) source."""
    try:
        source_config = AutoConfig.from_pretrained(src.path)
    except Exception as error:
        raise LlavaVRRefusal(
            f"cannot read {src.path}/config.json as a Transformers config ({one_line(error)})"
        ) from None
    text, vision = source_config.text_config, source_config.vision_config
    check_llm(text.model_type, getattr(text, "architectures", None))
    tower = check_tower(vision.model_type)
    # Transformers ties lm_head to the embeddings by the top-level flag alone; LLaVA-NeXT's config leaves a
    # `text_config.tie_word_embeddings: true` (Qwen2-0.5B's) unused, which LlavaVRConfig, like OneVision's, would
    # promote to the top level: a tie the source never had (both matrices stored, a warning at every load).
    tied = bool(getattr(source_config, "tie_word_embeddings", False))
    values = dict(
        vision_config=vision.to_dict(),
        text_config={**text.to_dict(), "tie_word_embeddings": tied},
        image_token_index=source_config.image_token_id,
        projector_hidden_act=source_config.projector_hidden_act,
        vision_feature_select_strategy=source_config.vision_feature_select_strategy,
        vision_feature_layer=source_config.vision_feature_layer,
        multimodal_projector_bias=getattr(source_config, "multimodal_projector_bias", True),
        image_grid_pinpoints=[list(p) for p in source_config.image_grid_pinpoints],
        tie_word_embeddings=tied,
    )
    if src.kind == "llava_next":
        values.update(vision_aspect_ratio="anyres", multi_image_anyres=True)
    else:
        # OneVision's video settings: its `<video>` token and its fixed 2x2 bilinear pooling of each frame
        values.update(
            vision_aspect_ratio=source_config.vision_aspect_ratio,
            multi_image_anyres=False,
            video_token_index=source_config.video_token_id,
            spatial_pool_stride=2,
        )
    return Plan(values, tower)


VR_FLAG_FIELDS = (
    "vision_remember_layers",
    "vision_remember_feature_layers",
    "vision_remember_interaction",
    "vision_remember_hidden_size",
    "vision_remember_num_heads",
    "vision_remember_window_size",
    "vision_remember_window_layout",
    "vision_remember_saliency",
    "vision_remember_self_attention",
)
"""Config fields set by the `--vision-remember-*` flags of the same names; None (unset) keeps the config's default."""


def vision_remember_values(args) -> dict:
    """The Vision Remember fields the flags set (`--no-vision-remember`: no layers); unset flags are left out."""
    values = {name: getattr(args, name) for name in VR_FLAG_FIELDS if getattr(args, name, None) is not None}
    if args.no_vision_remember:
        values["vision_remember_layers"] = []
    return values


def check_feature_layers(values: dict, vr: dict) -> None:
    """Refuses VR feature layers (given, or the config's default) beyond the tower's depth, naming the flag."""
    vision_layers = values["vision_config"]["num_hidden_layers"]
    if vr.get("vision_remember_layers") == []:
        return
    feature_layers = vr.get("vision_remember_feature_layers")
    if feature_layers is None:  # the config's default, read from a config without VR (which does not check it)
        feature_layers = LlavaVRConfig(**values, vision_remember_layers=[]).vision_remember_feature_layers
    bad = [i for i in feature_layers if not -vision_layers <= i <= vision_layers]
    if bad:
        raise LlavaVRRefusal(
            f"--vision-remember-feature-layers {list(feature_layers)} are beyond the vision tower's depth "
            f"({vision_layers} layers: hidden states 0..{vision_layers}); pass --vision-remember-feature-layers with "
            "indices in that range"
        )


def build_config(plan: Plan, args) -> LlavaVRConfig:
    """LlavaVRConfig from the source's settings and the flags; config validation errors become one-line refusals."""
    values = dict(plan.values, projector_type=args.projector_type)
    values["vision_config"] = {k: v for k, v in values["vision_config"].items() if not k.startswith("_")}
    vr = vision_remember_values(args)
    try:
        check_feature_layers(values, vr)
        return LlavaVRConfig(**values, **vr)
    except LlavaVRRefusal:
        raise
    except Exception as error:
        raise LlavaVRRefusal(f"invalid LLaVA-VR config: {one_line(error)}") from None
