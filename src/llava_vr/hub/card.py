# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Model cards of LLaVA-VR folders, rendered with `huggingface_hub.ModelCard` from the package's templates.

    render_card(config, "llava_vr_visual_forgetting.md", card_data(license="apache-2.0"), model_name=..., ...)
    render_model_card(config, base_model=..., source_description=..., report=...)   # a converted folder
    render_generic_card(config, repo_id=...)                                        # a folder published without one

Each returns a `ModelCard`; `card.save(folder / "README.md")` writes it. Templates (Jinja, front matter from
`card_data`) live in `llava_vr/hub/templates/` and receive `architecture_kwargs(config)` besides their own values.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from ..registries_llava_vr import PROJECTORS
from .ids import REPO_PLACEHOLDER, is_hub_id
from .refusals import LlavaVRRefusal, one_line

TEMPLATES = Path(__file__).resolve().parent / "templates"
CONVERTED_TEMPLATE = "llava_vr_converted.md"
TAGS = ["llava-vr", "vision-remember", "llava", "llava-next", "image-text-to-text", "multimodal", "custom_code"]
TOKENPACKER_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj", "query_norm", "region_norm")


def template_path(name: str) -> Path:
    """A card template shipped with the package (`llava_vr/hub/templates/NAME`)."""
    path = TEMPLATES / name
    if not path.is_file():
        raise FileNotFoundError(f"no model-card template {name!r} in {TEMPLATES}")
    return path


def card_data(
    base_model: str | None = None, license: str | None = "apache-2.0", datasets=None, language=None, extra_tags=()
) -> ModelCardData:
    """The card's YAML front matter: transformers, image-text-to-text, LLaVA-VR's tags (+ `extra_tags`)."""
    return ModelCardData(
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        base_model=base_model or None,
        license=license or None,
        tags=[*TAGS, *extra_tags],
        datasets=list(datasets) if datasets else None,
        language=language or None,
    )


def architecture_kwargs(config) -> dict:
    """The template values that describe a LlavaVRConfig (tower, LLM, projector, tokens per tile, Vision Remember)."""
    vision, text = config.vision_config, config.text_config
    tower_names = {"clip_vision_model": "CLIP", "siglip_vision_model": "SigLIP"}
    tower_kind = tower_names.get(vision.model_type, vision.model_type)
    return dict(
        projector_type=config.projector_type,
        projector_description=PROJECTORS.get(config.projector_type, config.projector_type),
        tokens_per_tile=config.num_image_tokens_per_tile,
        full_tile_tokens=config.patch_grid_size**2,
        token_grid=config.token_grid_size,
        tile_size=vision.image_size,
        tower=(
            f"{tower_kind} ViT, {vision.num_hidden_layers} layers, hidden {vision.hidden_size}, "
            f"{vision.num_attention_heads} heads, patch {vision.patch_size}, {vision.image_size}-px tiles"
        ),
        llm=(
            f"Qwen2, {text.num_hidden_layers} layers, hidden {text.hidden_size}, {text.num_attention_heads} heads "
            f"({text.num_key_value_heads} KV), vocabulary {text.vocab_size}"
        ),
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        vision_aspect_ratio=config.vision_aspect_ratio,
        multi_image_anyres=config.multi_image_anyres,
        num_pinpoints=len(config.image_grid_pinpoints),
        vr_layers=list(config.vision_remember_layers),
        vr_feature_layers=list(config.vision_remember_feature_layers),
        vr_interaction=config.vision_remember_interaction,
        vr_saliency=config.vision_remember_saliency,
        vr_self_attention=config.vision_remember_self_attention,
    )


def render_card(config, template: str, data: ModelCardData, **values) -> ModelCard:
    """The card of a model of `config` from the package template `template` (`architecture_kwargs(config)` and
    `values` are its variables)."""
    return ModelCard.from_template(
        data, template_path=str(template_path(template)), **{**architecture_kwargs(config), **values}
    )


def card_metadata(folder, *, strict: bool = False) -> dict:
    """The YAML metadata of `folder`'s README.md as a dict (`{}` without a README). Invalid YAML gives `{}`, or with
    `strict` (the card a push would upload) a refusal naming the fix."""
    readme = Path(folder) / "README.md"
    if not readme.is_file():
        return {}
    try:
        return ModelCard.load(readme, ignore_metadata_errors=False).data.to_dict()
    except Exception as error:
        if not strict:
            return {}
        raise LlavaVRRefusal(
            f"{readme}'s YAML metadata is invalid ({one_line(error)}): fix it, or move README.md away to upload a "
            "generated card"
        ) from None


def source_card_metadata(path: Path) -> dict:
    """license / datasets / language from the source's README.md metadata, when it has one."""
    data = card_metadata(path)
    if not data:
        return {}
    datasets = data.get("datasets")
    return {
        "license": data.get("license"),
        "datasets": [datasets] if isinstance(datasets, str) else datasets,
        "language": data.get("language"),
    }


def describe_new(key_group: str, config) -> str:
    """What a NEW (untrained) module is, for the card."""
    if ".vision_remember." in key_group:
        layer = key_group.rsplit(".", 1)[-1]
        self_attention = "bidirectional self-attention, " if config.vision_remember_self_attention else ""
        return (
            f"Vision Remember before decoder layer {layer}: expand MLP, `{config.vision_remember_interaction}` "
            f"token–feature cross-attention, {self_attention}zero-initialised output projection (the identity until "
            "trained)"
        )
    name = key_group.removeprefix("model.multi_modal_projector.")
    if key_group.startswith("model.multi_modal_projector."):
        if name == "linear_1" and config.projector_type == "pixel_shuffle":
            return "projector input layer, re-initialised: pixel_shuffle feeds it 4× the vision width"
        if name == "norm":
            return "pixel_shuffle LayerNorm over the space-to-depth features"
        if name == "peg":
            return "LDPv2 positional-encoding generator (depthwise 3×3 conv, zero-initialised)"
        if config.projector_type == "tokenpacker":
            return "TokenPacker point-to-region cross-attention (zero-initialised output: starts as average pooling)"
        return f"{config.projector_type} projector layer"
    if key_group.startswith("model.vision_tower."):
        return "vision tower tensor absent from the source (not used by LLaVA)"
    return "initialised fresh"


def group_new(new: dict[str, list[str]], numel: dict[str, int], config) -> list[dict]:
    """One entry per new module; the TokenPacker attention's leaves are grouped into one."""
    groups: dict[str, list[str]] = {}
    for module, keys in new.items():
        if (
            config.projector_type == "tokenpacker"
            and module.startswith("model.multi_modal_projector.")
            and module.split(".")[-1] in TOKENPACKER_ATTENTION
        ):
            module = "model.multi_modal_projector.{q,k,v,o}_proj + {query,region}_norm"
        groups.setdefault(module, []).extend(keys)
    return [
        {
            "name": module,
            "description": describe_new(keys[0].rsplit(".", 1)[0] if "{" in module else module, config),
            "parameters": sum(numel[k] for k in keys),
        }
        for module, keys in groups.items()
    ]


def carried_entries(report, config) -> list[dict]:
    """One entry per carried component (tensors, parameters, a note where it changed)."""
    carried = []
    for component, keys in report.carried.items():
        note = ""
        if component == "LLM (Qwen2)" and report.grown:
            note = "embeddings grown by the `<image>` row(s), mean-initialised (replaced by image features, never read)"
        if component == "projector" and config.projector_type != "mlp":
            note = "the MLP of the source's projector; it now reads pooled / compressed features"
        carried.append(
            {"name": component, "tensors": len(keys), "parameters": sum(report.numel[k] for k in keys), "note": note}
        )
    return carried


def render_model_card(
    config,
    *,
    base_model: str | None,
    source_description: str,
    report,
    repo_id: str | None = None,
    source_name: str | None = None,
    license: str | None = "apache-2.0",
    datasets=None,
    notes=(),
) -> ModelCard:
    """Card of a converted folder: provenance of every weight (carried / NEW and untrained); `report` is the
    conversion's `WeightReport`. `base_model` (a Hub id, or None when unknown) goes into the metadata; `source_name`
    (default `base_model`) names the source in the text; without `repo_id` the usage code shows `OWNER/NAME`, which
    `llava-vr push --repo-id` fills in."""
    source_name = source_name or base_model or "the source checkpoint"
    name = (repo_id or "").split("/")[-1] or f"LLaVA-VR ({Path(str(source_name)).name})"
    return render_card(
        config,
        CONVERTED_TEMPLATE,
        card_data(base_model, license, datasets),
        model_name=name,
        repo_id=repo_id or REPO_PLACEHOLDER,
        base_model=source_name,
        source_description=source_description,
        converted=True,
        identity_at_init=config.projector_type == "mlp",
        carried=carried_entries(report, config),
        new=group_new(report.new, report.numel, config),
        parameters_new=report.parameters_new,
        parameters_total=report.parameters_total,
        dropped=report.dropped,
        notes=list(notes),
    )


def render_generic_card(
    config, *, repo_id: str, base_model: str | None = None, license: str | None = "apache-2.0", datasets=None
) -> ModelCard:
    """Card for a folder published without one of ours (e.g. a fine-tuned checkpoint): architecture, usage, and the
    model it was fine-tuned from (`base_model`, a Hub id, when known)."""
    return render_card(
        config,
        CONVERTED_TEMPLATE,
        card_data(base_model, license, datasets),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        base_model=base_model,
        converted=False,
    )


def is_llava_vr_card(data: dict) -> bool:
    """Whether card metadata is one of this package's cards (its tags, and not a TRL training card)."""
    tags = data.get("tags") or []
    return "vision-remember" in tags and "trl" not in tags


def complete_card(text: str, repo_id: str, base_model: str | None) -> tuple[str, list[str]]:
    """One of our cards made ready for `repo_id`: the `OWNER/NAME` placeholder replaced by the repo id, the metadata's
    `base_model` set to `base_model` (a Hub id) or, when that is None, a local-path `base_model` removed. Returns the
    text and what changed."""
    changes = []
    if f'"{REPO_PLACEHOLDER}"' in text:
        text = text.replace(f'"{REPO_PLACEHOLDER}"', f'"{repo_id}"')
        changes.append(f"model_id {REPO_PLACEHOLDER} -> {repo_id}")
    card = ModelCard(text)
    current = card.data.base_model
    if base_model and current != base_model:
        card.data.base_model = base_model
        changes.append(f"base_model {current or '(none)'} -> {base_model}")
    elif current and not all(is_hub_id(b) for b in (current if isinstance(current, list) else [current])):
        card.data.base_model = None
        changes.append(f"base_model {current} removed (a local path, not a Hub id)")
    else:
        return text, changes
    return str(card).rstrip("\n") + "\n", changes
