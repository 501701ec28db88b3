# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Tiny random LLaVA-VR configs, models, inputs, tokenizers and processors (CPU, seconds) for tests, examples and
benchmarks. Not remote code; nothing here downloads anything.

The tiny tower has 14-px patches on 56-px tiles (4 x 4 patches): `mlp` gives 16 tokens per tile, the pooling
projectors 2 x 2 = 4. The tiny tokenizer is a byte-level BPE Qwen2 tokenizer trained on the fly
(`build_tiny_tokenizer`): `<|endoftext|>` 0 (pad), `<|im_start|>` 1, `<|im_end|>` 2 (eos), `<image>` 3.
"""

import torch

from .configuration_llava_vr import LlavaVRConfig
from .data.image_processors import anyres_image_processor
from .data.tokenizers import train_chat_tokenizer
from .modeling_llava_vr import LlavaVRForConditionalGeneration
from .packing_llava_vr import grid_pinpoints
from .processing_llava_vr import LlavaVRProcessor

IMAGE_TOKEN_ID = 299
TILE = 56

TINY_CORPUS = [
    "system user assistant You are a helpful assistant.",
    "What is the price of the apple? What is the total? Which bar is the tallest? How many rows are there?",
    "What is in row 1, column B? Which digit is at row 2, column 3? Read the receipt, the table and the chart.",
    "Describe the image in detail. A document with numbers, a form, a table, a bar chart and a photo.",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 42 99 100 2024 3.50 12.99 $ % #",
    "The total is 42. The answer is yes. The answer is no. There are three cats and two dogs in the picture.",
    "Same? Different? Compare the two images. The first image shows a receipt; the second shows a chart.",
    "Just text, please. Thank you! Hello, world. Good morning. Please answer with a single word or number.",
    "Question: what colour is the car? Answer: red, green, blue, yellow, black, white, orange, purple.",
    "Item Qty Price Total Subtotal Tax Date Name Address Invoice Store Cash Card Change Amount Balance",
]


def tiny_vision_config(kind="clip", image_size=TILE, layers=4) -> dict:
    """A 4-layer, 32-wide CLIP or SigLIP tower config with 14-px patches."""
    return dict(
        model_type=f"{kind}_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=14,
    )


def tiny_text_config(layers=5, vocab_size=300) -> dict:
    """A 5-layer, 64-wide Qwen2 config (4 query heads, 2 KV heads)."""
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
    """A tiny `LlavaVRConfig` (VR before layers 1 and 4, features from tower hidden states 1, 2, 3); SigLIP keeps
    every token (`full`) and feeds its last hidden state to the projector."""
    values = dict(
        vision_config=tiny_vision_config(kind, image_size),
        text_config=tiny_text_config(),
        image_token_index=IMAGE_TOKEN_ID,
        image_grid_pinpoints=pinpoints or grid_pinpoints(image_size, 2, 3),
        vision_remember_feature_layers=[1, 2, 3],
    )
    if kind == "siglip":
        values["vision_feature_select_strategy"] = "full"
        values["vision_feature_layer"] = -1
    values.update(overrides)
    return LlavaVRConfig(**values)


def tiny_model(config=None, seed=0, perturb_vr=False, **overrides) -> LlavaVRForConditionalGeneration:
    """A random tiny model in eval mode; `perturb_vr` gives VR non-zero output projections (a 'trained' VR)."""
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


def perturb_every_vision_remember_parameter(model, std=0.1, seed=0):
    """Moves EVERY VR parameter off its start, norm weights and biases included: the zero-initialised leaves as
    `perturb_vision_remember` does, then Gaussian noise of `std` on every parameter."""
    perturb_vision_remember(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.model.language_model.vision_remember.parameters():
            param.add_((torch.randn(param.shape, generator=generator) * std).to(param.dtype))


def image_inputs(model, sizes, prefix=(1, 2, 3), suffix=(4, 5), seed=0, batch_num_images=None):
    """One sample per image: `prefix <image>*n suffix`, left-padded; returns model kwargs and per-sample ids."""
    sizes = torch.tensor(sizes)
    layouts = model.model.image_layouts(sizes, batch_num_images)
    tile = model.config.vision_config.image_size
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(
        len(layouts), max(layout.num_tiles for layout in layouts), 3, tile, tile, generator=generator
    )
    ids = [
        torch.tensor([*prefix, *([model.config.image_token_id] * layout.num_tokens), *suffix], dtype=torch.long)
        for layout in layouts
    ]
    return left_pad(ids) | {"pixel_values": pixel_values, "image_sizes": sizes}, ids


def left_pad(ids, pad_id=0) -> dict:
    """`input_ids` / `attention_mask` of the 1-D id tensors `ids`, padded on the left to the longest."""
    length = max(len(i) for i in ids)
    input_ids = torch.full((len(ids), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), length), dtype=torch.long)
    for row, sample in enumerate(ids):
        input_ids[row, length - len(sample) :] = sample
        attention_mask[row, length - len(sample) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def build_tiny_tokenizer(save_dir=None):
    """A fresh tiny `Qwen2Tokenizer` (vocabulary ~400, trained once per process), saved to `save_dir` when given.

    eos `<|im_end|>`, pad `<|endoftext|>`, `<|im_start|>` an additional special token, `<image>` the image token:
    `tokenizer.image_token == "<image>"`, `tokenizer.image_token_id == 3`.
    """
    tokenizer = train_chat_tokenizer(TINY_CORPUS * 4, vocab_size=400)
    if save_dir is not None:
        tokenizer.save_pretrained(save_dir)
    return tokenizer


def tiny_processor(config, kind="next") -> LlavaVRProcessor:
    """A `LlavaVRProcessor` matching `config`: tiny tokenizer + Transformers' PIL AnyRes image processor."""
    image_processor = anyres_image_processor(kind, config.vision_config.image_size, config.image_grid_pinpoints)
    return LlavaVRProcessor.from_model_config(config, image_processor, build_tiny_tokenizer())


def processor_and_model(kind="next", **overrides):
    """A tiny model whose vocabulary and `<image>` id match the tiny tokenizer, with its processor
    (`"next"`: CLIP on 56-px tiles; `"onevision"`: SigLIP on 42-px tiles)."""
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


__all__ = [
    "IMAGE_TOKEN_ID",
    "TILE",
    "build_tiny_tokenizer",
    "image_inputs",
    "left_pad",
    "perturb_vision_remember",
    "processor_and_model",
    "tiny_config",
    "tiny_model",
    "tiny_processor",
    "tiny_text_config",
    "tiny_vision_config",
]
