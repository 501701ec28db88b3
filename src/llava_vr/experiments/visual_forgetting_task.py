# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The visual-forgetting task: 4 x 4 digit grids on 56-px images, the variants compared, the presets, and the tiny
models, tokenizer, processor and data built for one run."""

from __future__ import annotations

import torch

from llava_vr import LlavaVRConfig, LlavaVRForConditionalGeneration, LlavaVRProcessor
from llava_vr.data.image_processors import anyres_image_processor
from llava_vr.data.synthetic_documents import content_key, generate_samples, synthetic_document_dataset
from llava_vr.data.tokenizers import train_chat_tokenizer

from .visual_forgetting_options import PRESETS, VARIANTS

PATCH = 14


def grid_digits(text: str) -> list[str]:
    """The digits of an answer in order (cell letters and separators dropped)."""
    return [c for c in text if c.isdigit()]


def grid_task(preset: dict) -> dict:
    """`generate_samples` / `synthetic_document_dataset` keyword arguments of the preset's digit-grid task."""
    return dict(kinds=("digit_grid",), size=preset["image"], grid=preset["grid"], question=preset["question"])


def build_tokenizer():
    """The experiment's chat tokenizer (every digit a token of its own), trained on the task's words."""
    corpus = [f"Read the grid. {d}{(d + 3) % 10}{(d + 7) % 10} abcdefghijklmnop" for d in range(10)]
    return train_chat_tokenizer(corpus + ["user assistant system"] * 20, vocab_size=290)


SPECIAL_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id")


def digit_grid_config(tokenizer, tile: int, tower: tuple[int, int], llm: tuple[int, int], **settings) -> LlavaVRConfig:
    """The experiments' model: a CLIP-like tower (`tower` = (width, layers)) on `tile`-px tiles, a small tied Qwen2
    (`llm` = (width, layers)), the tokenizer's special ids, VR reading the tower's last three hidden states; `settings`
    (projector, VR, AnyRes grids) on top."""
    tower_hidden, tower_layers = tower
    llm_hidden, llm_layers = llm
    return LlavaVRConfig(
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=tower_hidden,
            intermediate_size=2 * tower_hidden,
            num_hidden_layers=tower_layers,
            num_attention_heads=4,
            image_size=tile,
            patch_size=PATCH,
        ),
        text_config=dict(
            model_type="qwen2",
            hidden_size=llm_hidden,
            intermediate_size=2 * llm_hidden,
            num_hidden_layers=llm_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=512,
            tie_word_embeddings=True,
            # the tokenizer's own: otherwise TRL re-aligns them and says so on every run
            **{name: getattr(tokenizer, name) for name in SPECIAL_TOKEN_IDS if getattr(tokenizer, name) is not None},
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_remember_feature_layers=list(range(max(1, tower_layers - 2), tower_layers + 1)),
        **settings,
    )


def variant_config(variant: str, preset: dict, tokenizer) -> LlavaVRConfig:
    """A CLIP-like tower on one `image`-px tile (no AnyRes), a small tied Qwen2, and the variant's projector / VR."""
    image = preset["image"]
    overrides = dict(VARIANTS[variant])
    overrides.setdefault("vision_remember_layers", preset["vr_layers"])
    if overrides.get("vision_remember_hidden_size") == "tower":
        overrides["vision_remember_hidden_size"] = preset["tower"][0]
    return digit_grid_config(
        tokenizer,
        image,
        preset["tower"],
        preset["llm"],
        image_grid_pinpoints=[[image, image]],
        vision_aspect_ratio="pad",
        **overrides,
    )


def build_model_and_processor(variant: str, preset: dict, tokenizer, seed: int):
    """A random model of `variant_config` (seeded) and its processor (LLaVA-NeXT image processor, mean/std 0.5)."""
    config = variant_config(variant, preset, tokenizer)
    torch.manual_seed(seed)
    model = LlavaVRForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    image = preset["image"]
    image_processor = anyres_image_processor(
        "next", image, [[image, image]], image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]
    )
    return model, LlavaVRProcessor.from_model_config(config, image_processor, tokenizer)


def datasets_for(preset: dict, seed: int, test_samples: int):
    """Training and held-out test datasets (TRL chats, question first); no test image is a training image."""
    from datasets import Dataset

    samples = generate_samples(preset["train"], seed, "train", **grid_task(preset))  # rendered once
    train = Dataset.from_list([s.to_chat(question_first=True) for s in samples])
    train_keys = {content_key(s.image) for s in samples}
    test = synthetic_document_dataset(
        test_samples, seed=seed, split="test", exclude=train_keys, question_first=True, **grid_task(preset)
    )
    return train, test


def held_out_samples(preset: dict, seed: int, count: int):
    """The first `count` samples of the test split of `seed` (the evaluation's first images)."""
    return generate_samples(count, seed, "test", **grid_task(preset))


__all__ = [
    "PATCH",
    "PRESETS",
    "VARIANTS",
    "build_model_and_processor",
    "build_tokenizer",
    "datasets_for",
    "grid_digits",
    "grid_task",
    "held_out_samples",
    "variant_config",
]
