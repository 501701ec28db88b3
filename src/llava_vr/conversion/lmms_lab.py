# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Original LLaVA-NeXT-repo (lmms-lab) checkpoints: `LlavaQwenForCausalLM`, `mm_*` config fields.

Their config does not carry the vision tower's: hidden size, depth, patch and image size are read from the weights,
the heads from `KNOWN_TOWER_HEADS` (when the weights' hidden size agrees), else from a local/cached config of the
tower, else `--vision-num-attention-heads`, else hidden // 64. `<image>` is added to the tokenizer (the repo used
the out-of-vocabulary id -200) and the embeddings grow when its id is past the last row.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

from transformers import Qwen2Config

from ..hub.ids import is_hub_id
from ..hub.refusals import LlavaVRRefusal
from ..packing_llava_vr import grid_pinpoints
from .layouts import renamed_shapes
from .plan import TOWER_NAMES, Plan, check_llm
from .sources import Source

# Towers the LLaVA-NeXT repo names in `mm_vision_tower`: (hidden size, heads).
KNOWN_TOWER_HEADS = {
    "openai/clip-vit-large-patch14-336": (1024, 16),
    "openai/clip-vit-large-patch14": (1024, 16),
    "openai/clip-vit-base-patch16": (768, 12),
    "openai/clip-vit-base-patch32": (768, 12),
    "google/siglip-so400m-patch14-384": (1152, 16),
    "google/siglip-so400m-patch14-224": (1152, 16),
    "google/siglip-large-patch16-384": (1024, 16),
    "google/siglip-base-patch16-384": (768, 12),
    "google/siglip-base-patch16-224": (768, 12),
}
QWEN2_TOP_LEVEL_SKIP = {"architectures", "model_type", "transformers_version", "dtype", "torch_dtype", "auto_map"}
TOWER = "model.vision_tower."


def detect_lmms_lab(src: Source) -> bool:
    """Sets `kind`, `layout`, `description` of an lmms-lab Qwen checkpoint; False when it is not one; refuses an
    lmms-lab checkpoint with another LLM."""
    config, keys = src.raw_config, src.keys
    architectures = config.get("architectures") or []
    model_type = config.get("model_type", "")
    lmms_arch = next((a for a in architectures if re.fullmatch(r"Llava\w*ForCausalLM", a)), None)
    if not ("mm_vision_tower" in config or lmms_arch or model_type.startswith("llava_")):
        return False
    what = ", ".join(architectures) or f"model_type={model_type!r}"
    llm = (lmms_arch or model_type).removeprefix("Llava").removesuffix("ForCausalLM").removeprefix("llava_")
    if llm.lower() != "qwen":
        raise LlavaVRRefusal(
            f"{src.path} is an LLaVA-NeXT-repo checkpoint with a {llm or 'non-Qwen'} LLM ({what}); "
            "LLaVA-VR's decoder is Qwen2 (LlavaQwenForCausalLM only)"
        )
    if "mm_vision_tower" not in config or not any(".mm_projector." in k for k in keys):
        raise LlavaVRRefusal(f"{src.path} ({what}) has no mm_vision_tower / mm_projector: not a LLaVA checkpoint")
    src.kind, src.layout = "lmms_lab", "lmms-lab"
    src.description = (
        f"LLaVA-NeXT-repo (lmms-lab) {lmms_arch or model_type} checkpoint "
        f"(vision tower {config.get('mm_vision_tower')}, {config.get('image_aspect_ratio')})"
    )
    return True


def lmms_lab_text_config(raw: dict, shapes: dict) -> dict:
    """Qwen2 config values from the flat lmms-lab config; vocabulary and depth checked against the weights
    (`shapes` under LLaVA-VR names)."""
    names = {f.name for f in dataclasses.fields(Qwen2Config)} | {"rope_theta", "rope_scaling"}
    text = {k: v for k, v in raw.items() if k in names and k not in QWEN2_TOP_LEVEL_SKIP}
    text["model_type"] = "qwen2"
    embed = shapes.get("model.language_model.embed_tokens.weight")
    if embed is None:
        raise LlavaVRRefusal("lmms-lab checkpoint without model.embed_tokens.weight")
    text["vocab_size"] = embed[0]  # the weights are the truth (configs sometimes lag a resize)
    if "hidden_size" in text and text["hidden_size"] != embed[1]:
        raise LlavaVRRefusal(f"config hidden_size {text['hidden_size']} != embed_tokens width {embed[1]}")
    layers = {int(m.group(1)) for k in shapes if (m := re.match(r"model\.language_model\.layers\.(\d+)\.", k))}
    if layers and text.get("num_hidden_layers", len(layers)) != len(layers):
        raise LlavaVRRefusal(f"config num_hidden_layers {text['num_hidden_layers']} but the weights hold {len(layers)}")
    text.pop("layer_types", None)
    return text


def parse_pinpoints(pinpoints, tile: int) -> list[list[int]]:
    """LLaVA-NeXT-repo pinpoints: a list of pairs, or a range string `"(1x1),...,(6x6)"` in tiles."""
    if isinstance(pinpoints, str):
        matches = re.findall(r"\((\d+)x(\d+)\)", pinpoints)
        if matches:
            (r0, c0), (r1, c1) = [tuple(map(int, m)) for m in (matches[0], matches[-1])]
            return [[h, w] for h, w in grid_pinpoints(tile, r1, c1) if h >= r0 * tile and w >= c0 * tile]
        try:
            pinpoints = json.loads(pinpoints.replace("(", "[").replace(")", "]"))
        except json.JSONDecodeError:
            raise LlavaVRRefusal(f"cannot parse image_grid_pinpoints {pinpoints!r}") from None
    if not pinpoints:
        raise LlavaVRRefusal("the checkpoint has no image_grid_pinpoints")
    return [[int(a), int(b)] for a, b in pinpoints]


def infer_vision_config(shapes: dict, tower_name: str | None, num_heads: int | None = None, pinpoints=None) -> dict:
    """The tower's config from its weights' shapes (`shapes` under LLaVA-VR names: `model.vision_tower.*`);
    `_heads_from` says where the head count came from."""
    patch = shapes.get(TOWER + "embeddings.patch_embedding.weight")
    positions = shapes.get(TOWER + "embeddings.position_embedding.weight")
    if patch is None or positions is None:
        raise LlavaVRRefusal(
            "cannot infer the vision tower: no embeddings.patch_embedding / position_embedding weights"
        )
    hidden, _, patch_size, _ = patch
    has_cls = TOWER + "embeddings.class_embedding" in shapes
    kind = "clip" if has_cls or TOWER + "pre_layrnorm.weight" in shapes else "siglip"
    grid = math.isqrt(positions[0] - int(has_cls))
    if grid * grid != positions[0] - int(has_cls):
        raise LlavaVRRefusal(f"position embeddings of {positions[0]} rows are not a square patch grid")
    layers = {int(m.group(1)) for k in shapes if (m := re.match(re.escape(TOWER) + r"encoder\.layers\.(\d+)\.", k))}
    if not layers or sorted(layers) != list(range(len(layers))):
        raise LlavaVRRefusal("cannot infer the vision tower's depth from encoder.layers.N weights")
    heads, how = vision_heads(tower_name, hidden, num_heads)
    if hidden % heads:
        raise LlavaVRRefusal(f"vision hidden size {hidden} is not divisible by {heads} heads ({how})")
    config = dict(
        model_type=f"{kind}_vision_model",
        hidden_size=hidden,
        intermediate_size=shapes[TOWER + "encoder.layers.0.mlp.fc1.weight"][0],
        num_hidden_layers=len(layers),
        num_attention_heads=heads,
        patch_size=patch_size,
        image_size=tower_image_size(tower_name, grid, patch_size, pinpoints),
        num_channels=patch[1],
    )
    if kind == "clip":
        config.update(hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768)
    else:
        config.update(hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)
    config["_heads_from"] = how
    return config


def tower_image_size(tower_name: str | None, grid: int, patch_size: int, pinpoints=None) -> int:
    """The tower's input resolution. The weights give only the patch grid, and several sizes share it (SigLIP-384:
    27 patches of 14 px = 378 < 384), so: the size the tower's name ends with (`...-patch14-384`), else the smallest
    pinpoint side, when either gives this grid; else `grid * patch_size`."""
    candidates = []
    match = re.search(r"-(\d+)(?:px)?/?$", tower_name or "")
    if match:
        candidates.append(int(match.group(1)))
    if pinpoints and not isinstance(pinpoints, str):
        candidates.append(min(min(int(a), int(b)) for a, b in pinpoints))
    for size in candidates:
        if size // patch_size == grid:
            return size
    return grid * patch_size


def vision_heads(tower_name: str | None, hidden: int, num_heads: int | None) -> tuple[int, str]:
    """(heads, where the number came from)."""
    if num_heads:
        return num_heads, "--vision-num-attention-heads"
    name = (tower_name or "").rstrip("/")
    known = KNOWN_TOWER_HEADS.get(name) or KNOWN_TOWER_HEADS.get("/".join(name.split("/")[-2:]))
    if known and known[0] == hidden:
        return known[1], f"known tower {name}"
    tower_config = local_tower_config(name)
    if tower_config and tower_config.get("hidden_size") == hidden and tower_config.get("num_attention_heads"):
        return tower_config["num_attention_heads"], f"{name}/config.json"
    return max(1, hidden // 64), "hidden_size // 64 (tower not in the known table)"


def local_tower_config(name: str) -> dict | None:
    """The tower's config.json from a local folder or the Hub cache, never from the network."""
    if not name:
        return None
    candidates = [Path(name).expanduser() / "config.json"]
    if is_hub_id(name):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
            if isinstance(cached, str):
                candidates.append(Path(cached))
        except Exception:
            pass
    for candidate in candidates:
        if candidate.is_file():
            data = json.loads(candidate.read_text())
            return data.get("vision_config", data)
    return None


def check_lmms_lab_config(raw: dict, keys: list[str]) -> tuple[str, str]:
    """Refuses what LLaVA-VR does not implement; returns (image_aspect_ratio, mm_vision_select_feature)."""
    if raw.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise LlavaVRRefusal(f"mm_projector_type {raw['mm_projector_type']!r} is not supported (mlp2x_gelu only)")
    if any(
        k.startswith("model.mm_projector.") and not k.startswith(("model.mm_projector.0.", "model.mm_projector.2."))
        for k in keys
    ):
        raise LlavaVRRefusal("the mm_projector has more than two linear layers (mlp2x_gelu only)")
    resampler = raw.get("mm_resampler_type")
    if resampler:
        raise LlavaVRRefusal(f"mm_resampler_type {resampler!r} is not supported")
    aspect = raw.get("image_aspect_ratio") or "square"
    if not (aspect == "anyres" or re.fullmatch(r"anyres_max_\d+", aspect)):
        raise LlavaVRRefusal(f"image_aspect_ratio {aspect!r} is not AnyRes ('anyres' or 'anyres_max_N' only)")
    merge = raw.get("mm_patch_merge_type", "flat")
    if not merge.startswith("spatial_unpad"):
        raise LlavaVRRefusal(f"mm_patch_merge_type {merge!r} is not supported (spatial_unpad, with image_newline)")
    feature = raw.get("mm_vision_select_feature", "patch")
    if feature not in ("patch", "cls_patch"):
        raise LlavaVRRefusal(f"mm_vision_select_feature {feature!r} is not supported (patch or cls_patch)")
    return aspect, feature


def lmms_lab_plan(src: Source, args) -> Plan:
    """The config values of an lmms-lab source (`args.vision_num_attention_heads` may name the tower's heads)."""
    raw = src.raw_config
    shapes = renamed_shapes(src.shapes, src.layout)
    aspect, feature = check_lmms_lab_config(raw, src.keys)
    vision = infer_vision_config(
        shapes, raw.get("mm_vision_tower"), args.vision_num_attention_heads, raw.get("image_grid_pinpoints")
    )
    heads_from = vision.pop("_heads_from")
    tower = vision["model_type"].split("_")[0]
    mm_hidden = raw.get("mm_hidden_size")
    if mm_hidden and mm_hidden != vision["hidden_size"]:
        raise LlavaVRRefusal(f"mm_hidden_size {mm_hidden} != the vision tower's hidden size {vision['hidden_size']}")
    text = lmms_lab_text_config(raw, shapes)
    check_llm(text["model_type"])
    values = dict(
        vision_config=vision,
        text_config=text,
        image_token_index=-1,  # set once <image> is in the tokenizer
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default" if feature == "patch" and tower == "clip" else "full",
        vision_feature_layer=int(raw.get("mm_vision_select_layer", -2)),
        multimodal_projector_bias="model.mm_projector.0.bias" in src.keys,
        image_grid_pinpoints=parse_pinpoints(raw.get("image_grid_pinpoints"), vision["image_size"]),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        vision_aspect_ratio=aspect,
        multi_image_anyres=aspect == "anyres",
        spatial_pool_stride=int(raw.get("mm_spatial_pool_stride") or 2),
    )
    notes = [
        f"vision tower inferred from the weights: {TOWER_NAMES[tower]} {vision['num_hidden_layers']} layers, hidden "
        f"{vision['hidden_size']}, {vision['num_attention_heads']} heads ({heads_from}), patch {vision['patch_size']}, "
        f"image {vision['image_size']}"
    ]
    pool_mode = raw.get("mm_spatial_pool_mode") or "bilinear"
    if pool_mode != "bilinear":
        notes.append(
            f"mm_spatial_pool_mode {pool_mode!r}: LLaVA-VR pools video frames bilinearly (LLaVA-OneVision's), with the "
            f"source's stride {values['spatial_pool_stride']}"
        )
    notes.append(
        "video: the lmms-lab tokenizer has no <video> token, so the converted processor is image-only; add <video> "
        "to the tokenizer and set video_token_index to pass videos"
    )
    return Plan(values, tower, needs_image_token=True, notes=notes)


def place_image_token(plan: Plan, tokenizer) -> int:
    """Points the plan's `image_token_index` at the tokenizer's `<image>`; returns how many embedding rows to append
    (when its id is past the last row)."""
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    plan.values["image_token_index"] = image_token_id
    rows = plan.values["text_config"]["vocab_size"]
    grow = max(0, image_token_id + 1 - rows)
    plan.values["text_config"]["vocab_size"] = rows + grow
    plan.notes.append(
        f"`<image>` token id {image_token_id} (the LLaVA-NeXT repo used -200, outside the vocabulary)"
        + (f"; embeddings grown by {grow} mean-initialised row(s)" if grow else "")
    )
    return grow
