"""Tiny random LLaVA-VR configurations and input builders shared by the tests (CPU, seconds per test)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llava_vr import LlavaVRConfig, LlavaVRForConditionalGeneration  # noqa: E402

IMAGE_TOKEN_ID = 299
TILE = 56  # 4 x 4 patches of 14 px: `mlp` gives 16 tokens per tile, the pooling projectors 2 x 2 = 4
PINPOINTS = [[TILE * h, TILE * w] for h in (1, 2) for w in (1, 2, 3)]


def tiny_vision_config(kind="clip", image_size=TILE, layers=4):
    return dict(
        model_type=f"{kind}_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=14,
    )


def tiny_text_config(layers=5, vocab_size=300):
    return dict(
        model_type="qwen2",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=2048,
    )


def tiny_config(kind="clip", image_size=TILE, pinpoints=None, **overrides) -> LlavaVRConfig:
    values = dict(
        vision_config=tiny_vision_config(kind, image_size),
        text_config=tiny_text_config(),
        image_token_index=IMAGE_TOKEN_ID,
        image_grid_pinpoints=pinpoints or [[image_size * h, image_size * w] for h in (1, 2) for w in (1, 2, 3)],
        vision_remember_feature_layers=[1, 2, 3],
    )
    if kind == "siglip":
        values["vision_feature_select_strategy"] = "full"
        values["vision_feature_layer"] = -1
    values.update(overrides)
    return LlavaVRConfig(**values)


def tiny_model(config=None, seed=0, perturb_vr=False, **overrides) -> LlavaVRForConditionalGeneration:
    """A random tiny model; `perturb_vr` gives VR non-zero output projections (a 'trained' VR)."""
    torch.manual_seed(seed)
    model = LlavaVRForConditionalGeneration(config or tiny_config(**overrides)).eval()
    if perturb_vr:
        perturb_vision_remember(model)
    return model


def perturb_vision_remember(model, std=0.5):
    """Moves every zero-initialised VR leaf (output projection, deformable offset/weight heads) off its start."""
    with torch.no_grad():
        for module in model.model.language_model.vision_remember.modules():
            if hasattr(module, "init_llava_vr"):
                module.weight.normal_(0, std if module.out_features == model.config.text_config.hidden_size else 0.1)
                module.bias.add_(torch.randn_like(module.bias) * 0.1)


def image_inputs(model, sizes, prefix=(1, 2, 3), suffix=(4, 5), seed=0, batch_num_images=None):
    """One sample per image: `prefix <image>*n suffix`, left-padded; returns model kwargs and per-sample ids."""
    sizes = torch.tensor(sizes)
    layouts = model.model.image_layouts(sizes, batch_num_images)
    tile = model.config.vision_config.image_size
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(len(layouts), max(l.num_tiles for l in layouts), 3, tile, tile, generator=generator)
    ids = [
        torch.tensor([*prefix, *([model.config.image_token_id] * l.num_tokens), *suffix], dtype=torch.long)
        for l in layouts
    ]
    return left_pad(ids) | {"pixel_values": pixel_values, "image_sizes": sizes}, ids


def left_pad(ids, pad_id=0):
    length = max(len(i) for i in ids)
    input_ids = torch.full((len(ids), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), length), dtype=torch.long)
    for row, sample in enumerate(ids):
        input_ids[row, length - len(sample) :] = sample
        attention_mask[row, length - len(sample) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.fixture
def model():
    return tiny_model(perturb_vr=True)


def tiny_processor(config, kind="next"):
    """A `LlavaVRProcessor` matching `config`: tiny tokenizer + Transformers' PIL AnyRes image processor."""
    from tiny_tokenizer import build_tiny_tokenizer
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    from llava_vr import LlavaVRProcessor

    tile = config.vision_config.image_size
    image_processor_class = LlavaNextImageProcessorPil if kind == "next" else LlavaOnevisionImageProcessorPil
    image_processor = image_processor_class(
        size={"height": tile, "width": tile} if kind == "onevision" else {"shortest_edge": tile},
        crop_size={"height": tile, "width": tile},
        image_grid_pinpoints=config.image_grid_pinpoints,
    )
    return LlavaVRProcessor.from_model_config(config, image_processor, build_tiny_tokenizer())


def processor_and_model(kind="next", **overrides):
    """A tiny model whose vocabulary and `<image>` id match the tiny tokenizer, with its processor."""
    from tiny_tokenizer import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = tiny_config(
        "clip" if kind == "next" else "siglip",
        image_size=TILE if kind == "next" else 42,
        text_config=tiny_text_config(vocab_size=len(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        **overrides,
    )
    model = tiny_model(config, perturb_vr=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return tiny_processor(config, kind), model
