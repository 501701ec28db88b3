# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The multi-tile task: AnyRes images of 2 x 2 or 1 x 3 tiles, each its own 4 x 4 digit grid, and a question that
names one tile (or one row of one tile); the tiny models, tokenizer, processor and data of one run."""

from __future__ import annotations

import random

import torch
from PIL import Image

from llava_vr import LlavaVRConfig, LlavaVRForConditionalGeneration, LlavaVRProcessor
from llava_vr.data.image_processors import anyres_image_processor
from llava_vr.data.synthetic_documents import SPLIT_SEED_OFFSETS, DocumentSample, content_key, render_digit_grid
from llava_vr.data.tokenizers import train_chat_tokenizer

from .multi_tile_options import PRESETS, VARIANTS
from .visual_forgetting_task import digit_grid_config, grid_digits

# layout -> (tile rows, tile columns); tiles are numbered 1, 2, ... in reading order
LAYOUTS = {"2x2": (2, 2), "1x3": (1, 3)}
LETTERS = "abcdefghijklmnop"
TILE_LETTERS = "ABCD"
# background grey of tile k (reading order) with `shaded` tiles: what tells the tiles apart to the frozen tower
SHADES = (255, 215, 175, 135)


def shaded(image: Image.Image, grey: int) -> Image.Image:
    """A black-on-white image with its white background turned `grey` (the ink kept)."""
    ink = Image.eval(image.convert("L"), lambda v: 255 - v)
    return Image.composite(Image.new("RGB", image.size, "black"), Image.new("RGB", image.size, (grey,) * 3), ink)


def pinpoints(tile: int, layouts=tuple(LAYOUTS)) -> list[list[int]]:
    """AnyRes resolutions `[height, width]` of `layouts`: each image is cut into exactly its tiles."""
    return [[LAYOUTS[name][0] * tile, LAYOUTS[name][1] * tile] for name in layouts]


def render_multi_tile(
    rng: random.Random,
    tile: int = 56,
    grid: int = 4,
    layouts=tuple(LAYOUTS),
    question: str = "row",
    shade: bool = False,
    repeat_fraction: float = 0.0,
) -> DocumentSample:
    """One image of digit-grid tiles in one of `layouts` and a question naming one region, a tile by its number in
    reading order (tile 2 is the top-right one of a 2 x 2 image): every question has the same number of tokens.
    `question="row"`: "Read row 3 of tile 2.", the answer is that row's digits after their cell letters (`a3b5c7d0`);
    `"tile"`: "Read tile 2.", the answer is every digit of that tile after its cell's letter (`a3b5...p1`);
    `"tile_labelled"`: the same with the tile's letter before each cell's (`Ba3Bb5...Bp1`, one token per label), so
    a digit follows a label that names both its tile and its cell.
    `shade`: tile k's background is `SHADES[k]` grey, so that a tile's own pixels say which tile it is.
    `repeat_fraction`: the chance that every tile holds the same digits (only the shade differs), so that a digit is
    read right by its cell alone (a curriculum for training; no random draw is made at 0, the streams stay as they
    were)."""
    repeat = repeat_fraction > 0 and rng.random() < repeat_fraction
    rows, cols = LAYOUTS[rng.choice(list(layouts))]
    image = Image.new("RGB", (cols * tile, rows * tile), "white")
    tiles, sample = [], None
    for k in range(rows * cols):
        if not (repeat and sample is not None):
            sample = render_digit_grid(rng, size=tile, grid=grid, question="all")
        tile_image = shaded(sample.image, SHADES[k]) if shade else sample.image
        image.paste(tile_image, ((k % cols) * tile, (k // cols) * tile))
        tiles.append(grid_digits(sample.answer))
    which, row = rng.randrange(rows * cols), rng.randrange(grid)
    if question in ("tile", "tile_labelled"):
        prefix = TILE_LETTERS[which] if question == "tile_labelled" else ""
        answer = "".join(prefix + LETTERS[c] + d for c, d in enumerate(tiles[which]))
        return DocumentSample(image, f"Read tile {which + 1}.", answer, "multi_tile")
    if question != "row":
        raise ValueError(f"question must be 'row', 'tile' or 'tile_labelled', got {question!r}")
    digits = tiles[which][row * grid : (row + 1) * grid]
    answer = "".join(LETTERS[c] + d for c, d in enumerate(digits))
    return DocumentSample(image, f"Read row {row + 1} of tile {which + 1}.", answer, "multi_tile")


def generate(
    num_samples: int,
    seed: int,
    split: str,
    tile: int,
    grid: int,
    layouts=tuple(LAYOUTS),
    question="row",
    shade=False,
    repeat_fraction=0.0,
):
    """`num_samples` `DocumentSample`s, deterministic for `(seed, split)`; splits use disjoint seed streams."""
    base = seed * 10_000_019 + SPLIT_SEED_OFFSETS[split] + 5_000_000  # apart from the one-tile task's streams
    return [
        render_multi_tile(random.Random(base + i), tile, grid, layouts, question, shade, repeat_fraction)
        for i in range(num_samples)
    ]


def build_tokenizer():
    """The chat tokenizer (every digit a token of its own), trained on the task's words."""
    corpus = [f"Read row {r} of tile {t}. a{r}b{(r + 3) % 10}c{(r + 7) % 10}d" for r in range(10) for t in range(5)]
    corpus += [f"Read tile {t}. " + "".join(f"{c}{(t + i) % 10}" for i, c in enumerate(LETTERS)) for t in range(10)]
    corpus += [
        "".join(f"{tile}{c}{(t + i) % 10}" for i, c in enumerate(LETTERS)) for tile in TILE_LETTERS for t in range(10)
    ]
    return train_chat_tokenizer(corpus + ["user assistant system"] * 20, vocab_size=400)


def variant_config(variant: str, preset: dict, tokenizer) -> LlavaVRConfig:
    """A CLIP-like tower on `tile`-px tiles, AnyRes over the layouts, a small tied Qwen2, the variant's projector/VR."""
    overrides = dict(VARIANTS[variant][0])
    overrides.setdefault("vision_remember_layers", preset["vr_layers"])
    return digit_grid_config(
        tokenizer,
        preset["tile"],
        preset["tower"],
        preset["llm"],
        image_grid_pinpoints=pinpoints(preset["tile"], preset["layouts"]),
        vision_aspect_ratio="anyres",
        **overrides,
    )


def build_model_and_processor(variant: str, preset: dict, tokenizer, seed: int):
    """A random model of `variant_config` (seeded) and its processor (LLaVA-NeXT AnyRes image processor)."""
    config = variant_config(variant, preset, tokenizer)
    torch.manual_seed(seed)
    model = LlavaVRForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    tile = preset["tile"]
    image_processor = anyres_image_processor(
        "next", tile, pinpoints(tile, preset["layouts"]), image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]
    )
    return model, LlavaVRProcessor.from_model_config(config, image_processor, tokenizer)


def datasets_for(preset: dict, seed: int, test_samples: int, question_first: bool):
    """Training and held-out test datasets (TRL chats); test images whose pixel digest is a training image's are
    dropped, and the count of dropped images is returned with them. The preset's `repeat_fraction` (tiles that all
    hold the same digits) applies to training images only: every test image has distinct tiles."""
    from datasets import Dataset

    train_samples = generate(
        preset["train"],
        seed,
        "train",
        preset["tile"],
        preset["grid"],
        preset["layouts"],
        preset["question"],
        preset.get("shade", False),
        preset.get("repeat_fraction", 0.0),
    )
    train_keys = {content_key(s.image) for s in train_samples}
    test_samples_ = generate(
        test_samples,
        seed,
        "test",
        preset["tile"],
        preset["grid"],
        preset["layouts"],
        preset["question"],
        preset.get("shade", False),
    )
    kept = [s for s in test_samples_ if content_key(s.image) not in train_keys]
    train = Dataset.from_list([s.to_chat(question_first) for s in train_samples])
    test = Dataset.from_list([s.to_chat(question_first) for s in kept])
    return train, test, len(test_samples_) - len(kept)


__all__ = [
    "LAYOUTS",
    "SHADES",
    "PRESETS",
    "VARIANTS",
    "build_model_and_processor",
    "build_tokenizer",
    "datasets_for",
    "generate",
    "pinpoints",
    "render_multi_tile",
    "shaded",
    "variant_config",
]
