#!/usr/bin/env python
# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Convert a LLaVA-NeXT / LLaVA-OneVision checkpoint (Qwen2 LLM) into a LLaVA-VR `trust_remote_code` folder.

    python conversion/convert_to_llava_vr.py --source SRC --output DIR
        [--projector-type mlp|adaptive_avg_pool|pixel_shuffle|ldpv2|tokenpacker]   (default adaptive_avg_pool)
        [--vision-remember-layers 1 4 | --no-vision-remember]                       (default 1 4)
        [--vision-remember-feature-layers 13 18 23] [--vision-remember-interaction sela|deformable|global]
        [--dtype auto|float32|bfloat16|float16] [--push-to-hub OWNER/NAME [--private] [--dry-run]] [--overwrite]

SRC is a local folder (or a Hub id, downloaded with `snapshot_download` when no such folder exists) holding one of

* a Transformers `LlavaNextForConditionalGeneration` checkpoint,
* a Transformers `LlavaOnevisionForConditionalGeneration` checkpoint,

  each in the current layout (`model.language_model.*`, `model.vision_tower.*`) or the llava-hf Hub layout
  (`language_model.model.*`, `language_model.lm_head.*`, `vision_tower[.vision_model].*`, `multi_modal_projector.*`,
  `image_newline`; Transformers 5.23's `save_pretrained` still writes this one),
* an original LLaVA-NeXT-repo checkpoint (lmms-lab layout: `LlavaQwenForCausalLM`, `mm_*` config fields, weights
  `model.layers.*`, `model.mm_projector.0/2`, `model.vision_tower.vision_tower.vision_model.*`). Its tower config is
  inferred from the weights, `<image>` is added to the tokenizer (the repo used the out-of-vocabulary id -200), and the
  matching Transformers image processor is built.

The vision tower, the LLM, the projector MLP (where its input width is unchanged) and `image_newline` are carried over;
new modules (Vision Remember, extra projector layers) get the model's own initialisation, under which VR is the
identity, so with `--projector-type mlp` the converted model reproduces the source's logits.

The output is written into a temporary folder beside DIR and renamed into place only when complete. Refusals exit
with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if importlib.util.find_spec("llava_vr") is None:  # the package when installed, else the source tree beside this script
    sys.path.insert(0, str(REPO_ROOT / "src"))

from conversion_utils import HUB_ID, ConversionError, one_line  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

PROJECTOR_TYPES = ("mlp", "adaptive_avg_pool", "pixel_shuffle", "ldpv2", "tokenpacker")
INTERACTIONS = ("sela", "deformable", "global")
DTYPES = ("float32", "bfloat16", "float16")  # torch is imported lazily: refusals of bad arguments answer at once

TOWER_NAMES = {"clip": "CLIP", "siglip": "SigLIP"}
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]

# Towers the LLaVA-NeXT repo names in `mm_vision_tower`: (hidden size, heads). The lmms-lab config does not carry the
# tower's config; hidden size, depth, patch and image size are read from the weights, the heads from this table
# (used only when the weights' hidden size agrees), else from a local/cached config of the tower, else hidden // 64.
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


def log(message: str = "") -> None:
    print(message, flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# Source: files, detection
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Source:
    path: Path
    source_id: str  # what the card's `base_model` names
    raw_config: dict
    weight_files: list[Path]
    keys: list[str]  # tensor names as stored
    kind: str = ""  # "llava_next" | "llava_onevision" | "lmms_lab"
    layout: str = ""  # "transformers" | "llava-hf" | "lmms-lab"
    description: str = ""


def resolve_source(source: str) -> tuple[Path, str]:
    """Local folder, or a Hub id downloaded with `snapshot_download` (only when no such folder exists)."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConversionError(f"--source {source} is a file; expected a checkpoint folder")
        return path.resolve(), hub_id_of_local_path(path.resolve()) or source
    if not HUB_ID.match(source):
        raise ConversionError(f"--source {source}: no such folder (and not a Hub id OWNER/NAME)")
    from huggingface_hub import snapshot_download

    log(f"Downloading {source} from the Hub ...")
    try:
        local = snapshot_download(
            source,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "README.md"],
        )
    except Exception as error:  # offline, gated, missing
        raise ConversionError(f"--source {source}: could not download it from the Hub ({one_line(error)})") from None
    return Path(local), source


def hub_id_of_local_path(path: Path) -> str | None:
    """`.../models--OWNER--NAME/snapshots/<sha>` (a Hub cache snapshot) -> `OWNER/NAME`."""
    for part in path.parts:
        if part.startswith("models--") and part.count("--") >= 2:
            owner, name = part[len("models--") :].split("--", 1)
            return f"{owner}/{name}"
    return None


def list_weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise ConversionError(f"{index.name} names shards that are not in {path}: {', '.join(missing[:3])}")
        return [path / n for n in names]
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
    if pickles:
        return pickles  # read with torch.load(weights_only=True)
    raise ConversionError(f"no weights (*.safetensors or pytorch_model*.bin) in {path}")


def tensor_names(files: list[Path]) -> list[str]:
    import torch

    from safetensors import safe_open

    names = []
    for file in files:
        if file.suffix == ".safetensors":
            with safe_open(file, framework="pt") as handle:
                names.extend(handle.keys())
        else:
            names.extend(torch.load(file, map_location="cpu", weights_only=True, mmap=True).keys())
    return names


def load_source(source: str) -> Source:
    path, source_id = resolve_source(source)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"no config.json in {path}")
    try:
        raw_config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ConversionError(f"{config_file} is not valid JSON ({error})") from None
    files = list_weight_files(path)
    src = Source(path, source_id, raw_config, files, tensor_names(files))
    detect(src)
    return src


TRANSFORMERS_KINDS = {
    "llava_next": ("llava_next", "LlavaNextForConditionalGeneration"),
    "llava_onevision": ("llava_onevision", "LlavaOnevisionForConditionalGeneration"),
}
EXPECTED = (
    "expected a Transformers LlavaNextForConditionalGeneration or LlavaOnevisionForConditionalGeneration checkpoint "
    "or an lmms-lab LLaVA-NeXT checkpoint (LlavaQwenForCausalLM)"
)


def detect(src: Source) -> None:
    """Sets `kind`, `layout` and `description` from config.json and the tensor names, or refuses."""
    config, keys = src.raw_config, src.keys
    architectures = config.get("architectures") or []
    model_type = config.get("model_type", "")
    what = ", ".join(architectures) or f"model_type={model_type!r}"
    for kind, (type_name, arch) in TRANSFORMERS_KINDS.items():
        if model_type == type_name or arch in architectures:
            src.kind = kind
            if any(k.startswith(("model.language_model.", "model.vision_tower.")) for k in keys):
                src.layout = "transformers"
                layout = "current layout: model.language_model.*"
            elif any(k.startswith(("language_model.", "vision_tower.")) for k in keys):
                src.layout = "llava-hf"
                layout = "llava-hf Hub layout: language_model.model.*"
            else:
                raise ConversionError(f"{src.path} has a {arch} config but no LLaVA weight names (e.g. {keys[:1]})")
            src.description = f"Transformers {arch} checkpoint ({layout})"
            return
    lmms_arch = next((a for a in architectures if re.fullmatch(r"Llava\w*ForCausalLM", a)), None)
    if "mm_vision_tower" in config or lmms_arch or model_type.startswith("llava_"):
        llm = (lmms_arch or model_type).removeprefix("Llava").removesuffix("ForCausalLM").removeprefix("llava_")
        if llm.lower() != "qwen":
            raise ConversionError(
                f"{src.path} is an LLaVA-NeXT-repo checkpoint with a {llm or 'non-Qwen'} LLM ({what}); "
                "LLaVA-VR's decoder is Qwen2 (LlavaQwenForCausalLM only)"
            )
        if "mm_vision_tower" not in config or not any(".mm_projector." in k for k in keys):
            raise ConversionError(f"{src.path} ({what}) has no mm_vision_tower / mm_projector: not a LLaVA checkpoint")
        src.kind, src.layout = "lmms_lab", "lmms-lab"
        src.description = (
            f"LLaVA-NeXT-repo (lmms-lab) {lmms_arch or model_type} checkpoint "
            f"(vision tower {config.get('mm_vision_tower')}, {config.get('image_aspect_ratio')})"
        )
        return
    raise ConversionError(f"{src.path} holds a {what} checkpoint; {EXPECTED}")


# ---------------------------------------------------------------------------------------------------------------------
# Key maps
# ---------------------------------------------------------------------------------------------------------------------
# (pattern, replacement); replacement None drops the tensor. First match wins; unmatched keys are refused.
DROP_ALWAYS = [(r"\.position_ids$", None), (r"rotary_emb\.inv_freq$", None)]
KEY_MAPS = {
    "transformers": DROP_ALWAYS
    + [
        (r"^model\.vision_tower\.vision_model\.", "model.vision_tower."),
        (r"^(model\.(vision_tower|multi_modal_projector|language_model)\.)", r"\1"),
        (r"^model\.image_newline$", "model.image_newline"),
        (r"^lm_head\.", "lm_head."),
    ],
    "llava-hf": DROP_ALWAYS
    + [
        (r"^language_model\.lm_head\.", "lm_head."),
        (r"^language_model\.model\.", "model.language_model."),
        (r"^vision_tower\.vision_model\.", "model.vision_tower."),
        (r"^vision_tower\.", "model.vision_tower."),
        (r"^multi_modal_projector\.", "model.multi_modal_projector."),
        (r"^image_newline$", "model.image_newline"),
    ],
    "lmms-lab": DROP_ALWAYS
    + [
        (r"^model\.vision_tower\.vision_tower\.vision_model\.head\.", None),  # SigLIP's pooling head: unused
        (r"^model\.vision_tower\.vision_tower\.vision_model\.", "model.vision_tower."),
        (r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
        (r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
        (r"^model\.image_newline$", "model.image_newline"),
        (r"^model\.(embed_tokens|layers|norm)\.", r"model.language_model.\1."),
        (r"^lm_head\.", "lm_head."),
    ],
}


def rename_key(key: str, layout: str) -> str | None:
    for pattern, replacement in KEY_MAPS[layout]:
        if re.search(pattern, key):
            return None if replacement is None else re.sub(pattern, replacement, key, count=1)
    raise ConversionError(f"unrecognised tensor {key!r} in a {layout}-layout checkpoint")


def read_state_dict(src: Source) -> "OrderedDict[str, torch.Tensor]":
    """All source tensors under LLaVA-VR names (progress bar per tensor)."""
    import torch

    from safetensors import safe_open

    renamed = {key: rename_key(key, src.layout) for key in src.keys}  # refuses unknown names before reading
    state_dict: OrderedDict[str, torch.Tensor] = OrderedDict()
    with tqdm(total=len(src.keys), desc="Reading and renaming tensors", unit="tensor") as bar:
        for file in src.weight_files:
            if file.suffix == ".safetensors":
                with safe_open(file, framework="pt") as handle:
                    for key in handle.keys():
                        if renamed[key] is not None:
                            state_dict[renamed[key]] = handle.get_tensor(key)
                        bar.update()
            else:
                for key, tensor in torch.load(file, map_location="cpu", weights_only=True, mmap=True).items():
                    if renamed[key] is not None:
                        state_dict[renamed[key]] = tensor
                    bar.update()
    return state_dict


def tensor_shapes(src: Source) -> dict[str, tuple]:
    import torch

    from safetensors import safe_open

    shapes = {}
    for file in src.weight_files:
        if file.suffix == ".safetensors":
            with safe_open(file, framework="pt") as handle:
                for key in handle.keys():
                    shapes[key] = tuple(handle.get_slice(key).get_shape())
        else:
            shapes.update({k: tuple(v.shape) for k, v in torch.load(file, map_location="cpu", weights_only=True, mmap=True).items()})
    return shapes


# ---------------------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """What the conversion builds, gathered before any tensor is read."""

    values: dict  # LlavaVRConfig kwargs
    tower: str  # "clip" | "siglip"
    needs_image_token: bool = False  # lmms-lab: add <image> to the tokenizer
    notes: list[str] = field(default_factory=list)


def transformers_plan(src: Source) -> Plan:
    from transformers import AutoConfig

    try:
        source_config = AutoConfig.from_pretrained(src.path)
    except Exception as error:
        raise ConversionError(f"cannot read {src.path}/config.json as a Transformers config ({one_line(error)})") from None
    text, vision = source_config.text_config, source_config.vision_config
    check_llm(text.model_type, getattr(text, "architectures", None))
    tower = check_tower(vision.model_type)
    values = dict(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_index=source_config.image_token_id,
        projector_hidden_act=source_config.projector_hidden_act,
        vision_feature_select_strategy=source_config.vision_feature_select_strategy,
        vision_feature_layer=source_config.vision_feature_layer,
        multimodal_projector_bias=getattr(source_config, "multimodal_projector_bias", True),
        image_grid_pinpoints=[list(p) for p in source_config.image_grid_pinpoints],
        tie_word_embeddings=bool(getattr(source_config, "tie_word_embeddings", False)),
    )
    if src.kind == "llava_next":
        values.update(vision_aspect_ratio="anyres", multi_image_anyres=True)
    else:
        values.update(vision_aspect_ratio=source_config.vision_aspect_ratio, multi_image_anyres=False)
    return Plan(values, tower)


def check_llm(model_type: str, architectures=None) -> None:
    if model_type != "qwen2":
        raise ConversionError(
            f"the source's LLM is {model_type!r}" + (f" ({', '.join(architectures)})" if architectures else "")
            + "; LLaVA-VR's decoder is Qwen2, only Qwen2-based checkpoints convert"
        )


def check_tower(model_type: str) -> str:
    if model_type not in ("clip_vision_model", "siglip_vision_model"):
        raise ConversionError(f"vision tower {model_type!r} is not supported (CLIP or SigLIP vision models only)")
    return model_type.split("_")[0]


QWEN2_TOP_LEVEL_SKIP = {"architectures", "model_type", "transformers_version", "dtype", "torch_dtype", "auto_map"}


def lmms_lab_text_config(raw: dict, shapes: dict) -> dict:
    from transformers import Qwen2Config
    import dataclasses

    names = {f.name for f in dataclasses.fields(Qwen2Config)} | {"rope_theta", "rope_scaling"}
    text = {k: v for k, v in raw.items() if k in names and k not in QWEN2_TOP_LEVEL_SKIP}
    text["model_type"] = "qwen2"
    embed = shapes.get("model.language_model.embed_tokens.weight")  # `shapes` are under LLaVA-VR names
    if embed is None:
        raise ConversionError("lmms-lab checkpoint without model.embed_tokens.weight")
    text["vocab_size"] = embed[0]  # the weights are the truth (configs sometimes lag a resize)
    if "hidden_size" in text and text["hidden_size"] != embed[1]:
        raise ConversionError(f"config hidden_size {text['hidden_size']} != embed_tokens width {embed[1]}")
    layers = {int(m.group(1)) for k in shapes if (m := re.match(r"model\.language_model\.layers\.(\d+)\.", k))}
    if layers and text.get("num_hidden_layers", len(layers)) != len(layers):
        raise ConversionError(f"config num_hidden_layers {text['num_hidden_layers']} but the weights hold {len(layers)}")
    for key in ("layer_types",):
        text.pop(key, None)
    return text


def parse_pinpoints(pinpoints, tile: int) -> list[list[int]]:
    """LLaVA-NeXT-repo pinpoints: a list of pairs, or a range string `"(1x1),...,(6x6)"` in tiles."""
    if isinstance(pinpoints, str):
        matches = re.findall(r"\((\d+)x(\d+)\)", pinpoints)
        if not matches:
            try:
                pinpoints = json.loads(pinpoints.replace("(", "[").replace(")", "]"))
            except json.JSONDecodeError:
                raise ConversionError(f"cannot parse image_grid_pinpoints {pinpoints!r}") from None
        else:
            (r0, c0), (r1, c1) = [tuple(map(int, m)) for m in (matches[0], matches[-1])]
            return [[r * tile, c * tile] for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]
    if not pinpoints:
        raise ConversionError("the checkpoint has no image_grid_pinpoints")
    return [[int(a), int(b)] for a, b in pinpoints]


def infer_vision_config(shapes: dict, tower_name: str | None, num_heads: int | None = None, pinpoints=None) -> dict:
    """The tower's config from its weights' shapes (`shapes` under LLaVA-VR names: `model.vision_tower.*`)."""
    prefix = "model.vision_tower."
    patch = shapes.get(prefix + "embeddings.patch_embedding.weight")
    positions = shapes.get(prefix + "embeddings.position_embedding.weight")
    if patch is None or positions is None:
        raise ConversionError("cannot infer the vision tower: no embeddings.patch_embedding / position_embedding weights")
    hidden, _, patch_size, _ = patch
    has_cls = prefix + "embeddings.class_embedding" in shapes
    kind = "clip" if has_cls or prefix + "pre_layrnorm.weight" in shapes else "siglip"
    grid = math.isqrt(positions[0] - int(has_cls))
    if grid * grid != positions[0] - int(has_cls):
        raise ConversionError(f"position embeddings of {positions[0]} rows are not a square patch grid")
    image_size = tower_image_size(tower_name, grid, patch_size, pinpoints)
    layers = {int(m.group(1)) for k in shapes if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", k))}
    if not layers or sorted(layers) != list(range(len(layers))):
        raise ConversionError("cannot infer the vision tower's depth from encoder.layers.N weights")
    intermediate = shapes[prefix + "encoder.layers.0.mlp.fc1.weight"][0]
    heads, how = vision_heads(tower_name, hidden, num_heads)
    if hidden % heads:
        raise ConversionError(f"vision hidden size {hidden} is not divisible by {heads} heads ({how})")
    config = dict(
        model_type=f"{kind}_vision_model",
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=len(layers),
        num_attention_heads=heads,
        patch_size=patch_size,
        image_size=image_size,
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
    if HUB_ID.match(name):
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


def lmms_lab_plan(src: Source, args) -> Plan:
    raw = src.raw_config
    shapes = {name: shape for key, shape in tensor_shapes(src).items() if (name := rename_key(key, src.layout))}
    if raw.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ConversionError(f"mm_projector_type {raw['mm_projector_type']!r} is not supported (mlp2x_gelu only)")
    if any(k.startswith("model.mm_projector.") and not k.startswith(("model.mm_projector.0.", "model.mm_projector.2."))
           for k in src.keys):
        raise ConversionError("the mm_projector has more than two linear layers (mlp2x_gelu only)")
    resampler = raw.get("mm_resampler_type")
    if resampler:
        raise ConversionError(f"mm_resampler_type {resampler!r} is not supported")
    aspect = raw.get("image_aspect_ratio") or "square"
    if not (aspect == "anyres" or re.fullmatch(r"anyres_max_\d+", aspect)):
        raise ConversionError(f"image_aspect_ratio {aspect!r} is not AnyRes ('anyres' or 'anyres_max_N' only)")
    merge = raw.get("mm_patch_merge_type", "flat")
    if not merge.startswith("spatial_unpad"):
        raise ConversionError(f"mm_patch_merge_type {merge!r} is not supported (spatial_unpad, with image_newline)")
    feature = raw.get("mm_vision_select_feature", "patch")
    if feature not in ("patch", "cls_patch"):
        raise ConversionError(f"mm_vision_select_feature {feature!r} is not supported (patch or cls_patch)")
    vision = infer_vision_config(shapes, raw.get("mm_vision_tower"), args.vision_num_attention_heads,
                                 raw.get("image_grid_pinpoints"))
    heads_from = vision.pop("_heads_from")
    tower = vision["model_type"].split("_")[0]
    mm_hidden = raw.get("mm_hidden_size")
    if mm_hidden and mm_hidden != vision["hidden_size"]:
        raise ConversionError(f"mm_hidden_size {mm_hidden} != the vision tower's hidden size {vision['hidden_size']}")
    text = lmms_lab_text_config(raw, shapes)
    check_llm(text["model_type"])
    has_cls = tower == "clip"
    values = dict(
        vision_config=vision,
        text_config=text,
        image_token_index=-1,  # set once <image> is in the tokenizer
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default" if feature == "patch" and has_cls else "full",
        vision_feature_layer=int(raw.get("mm_vision_select_layer", -2)),
        multimodal_projector_bias="model.mm_projector.0.bias" in src.keys,
        image_grid_pinpoints=parse_pinpoints(raw.get("image_grid_pinpoints"), vision["image_size"]),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        vision_aspect_ratio=aspect,
        multi_image_anyres=aspect == "anyres",
    )
    notes = [
        f"vision tower inferred from the weights: {TOWER_NAMES[tower]} {vision['num_hidden_layers']} layers, hidden "
        f"{vision['hidden_size']}, {vision['num_attention_heads']} heads ({heads_from}), patch {vision['patch_size']}, "
        f"image {vision['image_size']}"
    ]
    return Plan(values, tower, needs_image_token=True, notes=notes)


def build_config(plan: Plan, args):
    """LlavaVRConfig from the source's settings and the flags; config validation errors become one-line refusals."""
    from llava_vr import LlavaVRConfig

    values = dict(plan.values)
    vision_layers = values["vision_config"]["num_hidden_layers"]
    feature_layers = list(args.vision_remember_feature_layers)
    vr_layers = [] if args.no_vision_remember else list(args.vision_remember_layers)
    if vr_layers:
        bad = [i for i in feature_layers if not -vision_layers <= i <= vision_layers]
        if bad:
            raise ConversionError(
                f"--vision-remember-feature-layers {bad} are beyond the vision tower's depth ({vision_layers} layers: "
                f"hidden states 0..{vision_layers})"
            )
    values.update(
        projector_type=args.projector_type,
        vision_remember_layers=vr_layers,
        vision_remember_feature_layers=feature_layers,
        vision_remember_interaction=args.vision_remember_interaction,
    )
    values["vision_config"] = {k: v for k, v in values["vision_config"].items() if not k.startswith("_")}
    try:
        return LlavaVRConfig(**values)
    except Exception as error:
        raise ConversionError(f"invalid LLaVA-VR config: {one_line(error)}") from None


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer, image processor, processor
# ---------------------------------------------------------------------------------------------------------------------
def load_tokenizer(path: Path, add_image_token: bool = False):
    """The source's tokenizer; with `add_image_token`, `<image>` is added as a special token and registered as the
    tokenizer's `image_token` (saved in tokenizer_config.json's `extra_special_tokens`)."""
    from transformers import AutoTokenizer

    kwargs = {"extra_special_tokens": {"image_token": "<image>"}} if add_image_token else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except Exception as error:
        raise ConversionError(f"no usable tokenizer in {path} ({one_line(error)}); pass --tokenizer PATH") from None
    if add_image_token and tokenizer.convert_tokens_to_ids("<image>") in (None, tokenizer.unk_token_id):
        tokenizer.add_tokens(["<image>"], special_tokens=True)
    return tokenizer


def grow_embeddings(state_dict, new_rows: int, tied: bool) -> list[str]:
    """Appends `new_rows` mean-initialised rows to embed_tokens (and lm_head unless tied)."""
    import torch

    grown = []
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        if key not in state_dict or (tied and key == "lm_head.weight"):
            continue
        weight = state_dict[key]
        mean = weight.float().mean(0, keepdim=True).to(weight.dtype)
        state_dict[key] = torch.cat([weight, mean.expand(new_rows, -1)], dim=0)
        grown.append(key)
    return grown


def build_image_processor(tower: str, image_size: int, pinpoints):
    """The Transformers image processor matching the tower (lmms-lab checkpoints carry none)."""
    if tower == "clip":
        from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

        return LlavaNextImageProcessorPil(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
            image_mean=CLIP_MEAN,
            image_std=CLIP_STD,
            image_grid_pinpoints=pinpoints,
        )
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    return LlavaOnevisionImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        image_grid_pinpoints=pinpoints,
    )


def source_image_processor(src: Source, plan: Plan, config):
    """The source's own image processor when it has one (Transformers checkpoints), else a matching one."""
    if src.kind != "lmms_lab" and (src.path / "preprocessor_config.json").is_file():
        from transformers import AutoImageProcessor

        try:
            image_processor = AutoImageProcessor.from_pretrained(src.path)
        except Exception as error:
            raise ConversionError(f"cannot load the source's image processor ({one_line(error)})") from None
        source_pinpoints = [list(p) for p in (getattr(image_processor, "image_grid_pinpoints", None) or [])]
        if source_pinpoints and source_pinpoints != config.image_grid_pinpoints:
            plan.notes.append("image processor pinpoints replaced by the model config's")
        image_processor.image_grid_pinpoints = config.image_grid_pinpoints
        return image_processor
    plan.notes.append(
        f"image processor built for {TOWER_NAMES[plan.tower]} ({config.vision_config.image_size}-px tiles, "
        + ("LLaVA-NeXT-style, CLIP mean/std)" if plan.tower == "clip" else "LLaVA-OneVision-style, mean/std 0.5)")
    )
    return build_image_processor(plan.tower, config.vision_config.image_size, config.image_grid_pinpoints)


def build_processor(image_processor, tokenizer, config):
    """LLaVA-VR's processor, counting `config.num_image_tokens_per_tile` tokens per tile (follows the projector)."""
    try:
        from llava_vr.processing_llava_vr import LlavaVRProcessor
    except ImportError as error:
        raise ConversionError(f"llava_vr.processing_llava_vr is not available ({one_line(error)})") from None
    processor = LlavaVRProcessor.from_model_config(config, image_processor, tokenizer)
    image_token_id = getattr(processor, "image_token_id", None)
    if image_token_id is None:
        image_token_id = tokenizer.convert_tokens_to_ids(getattr(processor, "image_token", "<image>"))
    if image_token_id != config.image_token_index:
        raise ConversionError(
            f"the tokenizer's image token has id {image_token_id} but the model's image_token_index is "
            f"{config.image_token_index}"
        )
    return processor


def build_generation_config(src: Source, tokenizer):
    from transformers import GenerationConfig

    try:
        generation_config = GenerationConfig.from_pretrained(src.path)
    except Exception:
        generation_config = GenerationConfig()
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(generation_config, name, None) is None and getattr(tokenizer, name, None) is not None:
            setattr(generation_config, name, getattr(tokenizer, name))
    return generation_config


# ---------------------------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class WeightReport:
    carried: dict[str, list[str]]  # component -> keys carried from the source
    new: dict[str, list[str]]  # module -> keys initialised fresh (untrained)
    dropped: list[str]  # source tensors not used
    grown: list[str]  # embeddings grown for <image>
    numel: dict[str, int]  # elements per LLaVA-VR tensor
    parameters_new: int = 0
    parameters_total: int = 0


COMPONENTS = [
    ("model.vision_tower.", "vision tower"),
    ("model.multi_modal_projector.", "projector"),
    ("model.image_newline", "image_newline"),
    ("model.language_model.vision_remember.", "Vision Remember"),
    ("model.language_model.", "LLM (Qwen2)"),
    ("lm_head.", "LLM (Qwen2)"),
]


def component_of(key: str) -> str:
    return next(name for prefix, name in COMPONENTS if key.startswith(prefix))


def new_module_of(key: str) -> str:
    """`model.language_model.vision_remember.1.expand_in.weight` -> `model.language_model.vision_remember.1`."""
    match = re.match(r"(model\.language_model\.vision_remember\.\d+)\.", key)
    if match:
        return match.group(1)
    return key.rsplit(".", 1)[0] if key.count(".") > 1 else key


def plan_weights(config, state_dict) -> WeightReport:
    """Matches the renamed source tensors against a meta-device LLaVA-VR of `config`."""
    import torch

    from llava_vr import LlavaVRForConditionalGeneration

    with torch.device("meta"):
        skeleton = LlavaVRForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    tied = bool(config.tie_word_embeddings)
    carried: dict[str, list[str]] = {}
    new: dict[str, list[str]] = {}
    dropped = []
    for key in list(state_dict):
        if key not in state_dict:  # dropped with its layer
            continue
        if key not in expected:
            if key.startswith("model.vision_tower.head."):  # SigLIP pooling head our tower config does not build
                dropped.append(key)
                del state_dict[key]
                continue
            raise ConversionError(f"source tensor {key!r} has no place in LLaVA-VR")
        if tuple(state_dict[key].shape) != expected[key]:
            if key.startswith("model.multi_modal_projector."):  # e.g. pixel_shuffle's linear_1 reads 4x the width:
                module = key.rsplit(".", 1)[0] + "."  # the whole layer starts fresh, its bias included
                for other in [k for k in state_dict if k.startswith(module)]:
                    dropped.append(other)
                    del state_dict[other]
                continue
            raise ConversionError(
                f"source tensor {key} has shape {tuple(state_dict[key].shape)}, LLaVA-VR expects {expected[key]}"
            )
    for key, shape in expected.items():
        if key in state_dict:
            carried.setdefault(component_of(key), []).append(key)
        elif tied and key == "lm_head.weight":
            carried.setdefault(component_of(key), []).append(key)
        else:
            new.setdefault(new_module_of(key), []).append(key)
    parameters_new = sum(math.prod(expected[k]) for keys in new.values() for k in keys)
    parameters_total = sum(p.numel() for p in skeleton.parameters())
    essential = ["model.language_model.embed_tokens.weight", "model.multi_modal_projector.linear_2.weight"]
    missing_essential = [k for k in essential if k not in state_dict]
    if missing_essential or not any(k.startswith("model.vision_tower.") for k in state_dict):
        raise ConversionError(f"the source lacks essential weights: {missing_essential or ['model.vision_tower.*']}")
    numel = {k: math.prod(shape) for k, shape in expected.items()}
    return WeightReport(carried, new, dropped, [], numel, parameters_new, parameters_total)


def build_model(config, state_dict, dtype):
    """LLaVA-VR with the source tensors loaded and everything else initialised by the model's own init."""
    from llava_vr import LlavaVRForConditionalGeneration
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report lists the new keys; we print our own summary
    try:
        model, info = LlavaVRForConditionalGeneration.from_pretrained(
            None, config=config, state_dict=state_dict, dtype=dtype, output_loading_info=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    if info["unexpected_keys"] or info["mismatched_keys"] or info["error_msgs"]:
        raise ConversionError(f"weights did not load cleanly: {info}")
    return model.eval()


def source_dtype(state_dict) -> torch.dtype:
    import torch

    counts: dict[torch.dtype, int] = {}
    for tensor in state_dict.values():
        if tensor.is_floating_point():
            counts[tensor.dtype] = counts.get(tensor.dtype, 0) + tensor.numel()
    return max(counts, key=counts.get) if counts else torch.float32


# ---------------------------------------------------------------------------------------------------------------------
# Output folder
# ---------------------------------------------------------------------------------------------------------------------
def check_output(output: Path, source: Path | None, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise ConversionError(f"--output {output} exists and is not a folder")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise ConversionError(f"--output {output} exists and is not empty (pass --overwrite to replace it)")
    resolved = output.resolve()
    if source is not None and (resolved == source or source in resolved.parents or resolved in source.parents):
        raise ConversionError(f"--output {output} overlaps the source folder {source}")


def move_into_place(tmp: Path, output: Path) -> None:
    backup = None
    if output.exists():
        backup = output.with_name(f".{output.name}.old-{os.getpid()}")
        output.rename(backup)
    try:
        tmp.rename(output)
    except BaseException:
        if backup is not None:
            backup.rename(output)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------------------------------
def convert(args) -> Path:
    import torch

    output = Path(args.output).expanduser()
    src = load_source(args.source)
    check_output(output, src.path, args.overwrite)
    log(f"Found: {src.description} in {src.path}")

    plan = transformers_plan(src) if src.kind != "lmms_lab" else lmms_lab_plan(src, args)
    tokenizer = load_tokenizer(Path(args.tokenizer) if args.tokenizer else src.path, plan.needs_image_token)
    grow = 0
    if plan.needs_image_token:
        image_token_id = tokenizer.convert_tokens_to_ids("<image>")
        plan.values["image_token_index"] = image_token_id
        rows = plan.values["text_config"]["vocab_size"]
        if image_token_id >= rows:
            grow = image_token_id + 1 - rows
            plan.values["text_config"]["vocab_size"] = rows + grow
        plan.notes.append(
            f"`<image>` token id {image_token_id} (the LLaVA-NeXT repo used -200, outside the vocabulary)"
            + (f"; embeddings grown by {grow} mean-initialised row(s)" if grow else "")
        )
    config = build_config(plan, args)
    image_processor = source_image_processor(src, plan, config)
    processor = build_processor(image_processor, tokenizer, config)

    state_dict = read_state_dict(src)
    grown = grow_embeddings(state_dict, grow, bool(config.tie_word_embeddings)) if grow else []
    report = plan_weights(config, state_dict)
    report.grown = grown
    dtype = source_dtype(state_dict) if args.dtype == "auto" else getattr(torch, args.dtype)
    log(f"Building LLaVA-VR ({config.projector_type}, VR before layers {config.vision_remember_layers or 'none'}, "
        f"{config.num_image_tokens_per_tile} tokens per tile, {str(dtype).removeprefix('torch.')})")
    model = build_model(config, state_dict, dtype)
    del state_dict
    model.generation_config = build_generation_config(src, tokenizer)

    from llava_vr_card import render_model_card, source_card_metadata

    metadata = source_card_metadata(src.path)
    base_model = args.base_model or src.source_id
    if not HUB_ID.match(base_model):
        log(f"  note: the card's base_model is the local path {base_model}; the Hub expects an id (--base-model OWNER/NAME)")
    card = render_model_card(
        config,
        base_model=base_model,
        source_description=src.description,
        report=report,
        repo_id=args.push_to_hub,
        license=args.license or metadata.get("license") or "apache-2.0",
        datasets=args.datasets or metadata.get("datasets"),
        notes=plan.notes,
    )

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        card.save(tmp / "README.md")
        move_into_place(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print_summary(output, config, report, plan)
    return output


def print_summary(output: Path, config, report: WeightReport, plan: Plan) -> None:
    log(f"Wrote {output}")
    for note in plan.notes:
        log(f"  note: {note}")
    for component, keys in report.carried.items():
        log(f"  carried  {component:<16} {len(keys):>5} tensors")
    for module, keys in report.new.items():
        log(f"  NEW      {module} ({len(keys)} tensors, untrained)")
    if report.dropped:
        log(f"  dropped  {len(report.dropped)} source tensors: {', '.join(report.dropped[:4])}"
            + (" ..." if len(report.dropped) > 4 else ""))
    log(f"  new parameters: {report.parameters_new:,} of {report.parameters_total:,}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Convert a LLaVA-NeXT / LLaVA-OneVision (Qwen2) checkpoint into a LLaVA-VR trust_remote_code folder."
    )
    parser.add_argument("--source", required=True, help="checkpoint folder, or a Hub id when no such folder exists")
    parser.add_argument("--output", required=True, help="output folder (written atomically)")
    parser.add_argument("--projector-type", choices=PROJECTOR_TYPES, default="adaptive_avg_pool")
    vr = parser.add_mutually_exclusive_group()
    vr.add_argument("--vision-remember-layers", type=int, nargs="+", default=[1, 4], metavar="L",
                    help="0-based decoder layers VR runs before (default 1 4)")
    vr.add_argument("--no-vision-remember", action="store_true", help="no Vision Remember modules")
    parser.add_argument("--vision-remember-feature-layers", type=int, nargs="+", default=[13, 18, 23], metavar="I",
                        help="tower hidden states VR reads (default 13 18 23; 0 = embeddings)")
    parser.add_argument("--vision-remember-interaction", choices=INTERACTIONS, default="sela")
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                        help="weights dtype of the output (default: the source's)")
    parser.add_argument("--tokenizer", help="take the tokenizer from this folder instead of the source")
    parser.add_argument("--vision-num-attention-heads", type=int,
                        help="lmms-lab sources: the tower's heads, when its name is not in the known table")
    parser.add_argument("--base-model", help="base_model for the model card (default: the source's Hub id or path)")
    parser.add_argument("--license", help="license for the model card (default: the source card's, else apache-2.0)")
    parser.add_argument("--datasets", nargs="+", help="datasets for the model card (default: the source card's)")
    parser.add_argument("--push-to-hub", metavar="OWNER/NAME", help="upload the converted folder to this repo")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    parser.add_argument("--dry-run", action="store_true", help="with --push-to-hub: list what would upload, upload nothing")
    parser.add_argument("--commit-message", default=None, help="with --push-to-hub")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output folder")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if (args.private or args.dry_run) and not args.push_to_hub:
        parser.error("--private / --dry-run need --push-to-hub")
    if args.push_to_hub and not HUB_ID.match(args.push_to_hub):
        parser.error(f"--push-to-hub {args.push_to_hub!r}: expected OWNER/NAME")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        source = Path(args.source).expanduser()
        check_output(Path(args.output).expanduser(), source.resolve() if source.exists() else None, args.overwrite)
        from transformers.utils import logging as hf_logging  # the heavy imports start here

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            output = convert(args)
        finally:
            hf_logging.set_verbosity(verbosity)
        if args.push_to_hub:
            from push_to_hub import push_folder

            push_folder(output, args.push_to_hub, private=args.private, dry_run=args.dry_run,
                        commit_message=args.commit_message or f"Add LLaVA-VR conversion of {args.base_model or args.source}")
    except ConversionError as error:
        if args.debug:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug or an unexpected file: still one line, --debug for the traceback
        if args.debug:
            raise
        print(f"error: {type(error).__name__}: {one_line(error)} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
