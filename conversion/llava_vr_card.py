# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Model cards for LLaVA-VR folders, rendered with `huggingface_hub.ModelCard` from `model_cards/`."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

TEMPLATE = Path(__file__).resolve().parent.parent / "model_cards" / "llava_vr_converted.md"
TAGS = ["llava-vr", "vision-remember", "llava", "llava-next", "image-text-to-text", "multimodal", "custom_code"]

PROJECTOR_DESCRIPTIONS = {
    "mlp": "LLaVA-NeXT's two-layer GELU MLP, no compression",
    "adaptive_avg_pool": "2D adaptive average pooling of each tile's patch grid, then the two-layer MLP",
    "pixel_shuffle": "2×2 space-to-depth (InternVL), LayerNorm, then the two-layer MLP",
    "ldpv2": "MobileVLM-v2 LDPv2: MLP, 2×2 average pooling, depthwise-conv positional residual (PEG)",
    "tokenpacker": "TokenPacker: pooled queries re-read their region of the full-resolution features, then the MLP",
}


def source_card_metadata(path: Path) -> dict:
    """license / datasets / language from the source's README.md metadata, when it has one."""
    readme = Path(path) / "README.md"
    if not readme.is_file():
        return {}
    try:
        data = ModelCard.load(readme).data.to_dict()
    except Exception:
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
        return (
            f"Vision Remember before decoder layer {layer}: expand MLP, `{config.vision_remember_interaction}` "
            "token–feature cross-attention, bidirectional self-attention, zero-initialised output projection "
            "(the identity until trained)"
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
        if config.projector_type == "tokenpacker" and module.startswith("model.multi_modal_projector.") and \
                module.split(".")[-1] in ("q_proj", "k_proj", "v_proj", "o_proj", "query_norm", "region_norm"):
            module = "model.multi_modal_projector.{q,k,v,o}_proj + {query,region}_norm"
        groups.setdefault(module, []).extend(keys)
    return [
        {"name": module, "description": describe_new(keys[0].rsplit(".", 1)[0] if "{" in module else module, config),
         "parameters": sum(numel[k] for k in keys)}
        for module, keys in groups.items()
    ]


def architecture_kwargs(config) -> dict:
    vision, text = config.vision_config, config.text_config
    tower_kind = {"clip_vision_model": "CLIP", "siglip_vision_model": "SigLIP"}.get(vision.model_type, vision.model_type)
    return dict(
        projector_type=config.projector_type,
        projector_description=PROJECTOR_DESCRIPTIONS.get(config.projector_type, config.projector_type),
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
        vr_saliency=config.saliency_mode,
        vr_self_attention=config.vision_remember_self_attention,
    )


def card_data(base_model: str | None, license: str | None, datasets, language=None) -> ModelCardData:
    return ModelCardData(
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        base_model=base_model or None,
        license=license or None,
        tags=list(TAGS),
        datasets=list(datasets) if datasets else None,
        language=language or None,
    )


def render_model_card(
    config,
    *,
    base_model: str,
    source_description: str,
    report,
    repo_id: str | None = None,
    license: str | None = "apache-2.0",
    datasets=None,
    notes=(),
) -> ModelCard:
    """Card of a converted folder: provenance of every weight (carried / NEW and untrained)."""
    carried = []
    for component, keys in report.carried.items():
        note = ""
        if component == "LLM (Qwen2)" and report.grown:
            note = "embeddings grown by the `<image>` row(s), mean-initialised (replaced by image features, never read)"
        if component == "projector" and config.projector_type != "mlp":
            note = "the MLP of the source's projector; it now reads pooled / compressed features"
        carried.append({"name": component, "tensors": len(keys), "parameters": sum(report.numel[k] for k in keys),
                        "note": note})
    identity = config.projector_type == "mlp"
    name = (repo_id or "").split("/")[-1] or f"LLaVA-VR ({Path(str(base_model)).name})"
    return ModelCard.from_template(
        card_data(base_model, license, datasets),
        template_path=str(TEMPLATE),
        model_name=name,
        repo_id=repo_id or "OWNER/NAME",
        base_model=base_model,
        source_description=source_description,
        converted=True,
        identity_at_init=identity,
        carried=carried,
        new=group_new(report.new, report.numel, config),
        parameters_new=report.parameters_new,
        parameters_total=report.parameters_total,
        dropped=report.dropped,
        notes=list(notes),
        **architecture_kwargs(config),
    )


def render_generic_card(config, *, repo_id: str, base_model: str | None = None, license: str | None = "apache-2.0",
                        datasets=None) -> ModelCard:
    """Card for a folder published without one (e.g. a fine-tuned checkpoint): architecture and usage only."""
    return ModelCard.from_template(
        card_data(base_model, license, datasets),
        template_path=str(TEMPLATE),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        base_model=base_model or "a LLaVA-NeXT / LLaVA-OneVision checkpoint",
        converted=False,
        **architecture_kwargs(config),
    )
