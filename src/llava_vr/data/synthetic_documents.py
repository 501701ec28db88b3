# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Offline synthetic document data: rendered receipts, tables, bar charts and digit grids with question-answer pairs.

PIL only, deterministic for a seed. Every sample is a chat in TRL's vision format: a `messages` column (user turn
with an `{"type": "image"}` item and the question, assistant turn with the answer) and an `images` column.
Train and test splits draw from disjoint seed streams and are checked for identical images (`content_key`).

Not part of the model's remote-code files: training and experiments import it from the installed package
(`llava_vr.data.synthetic_documents`).
"""

import hashlib
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

KINDS = ("receipt", "table", "bar_chart", "digit_grid")
# Sample `index` of split `split` for seed `seed` is drawn from `random.Random(seed * 10_000_019 + offset + index)`:
# with fewer than 1_000_003 samples per split, no two (seed, split) streams meet (non-negative seeds). `benchmark`: the
# lmms-eval document task of `llava_vr.evaluation` (held out from every training and experiment split).
SPLIT_SEED_OFFSETS = {"train": 0, "validation": 1_000_003, "test": 2_000_029, "benchmark": 4_000_037}
ITEMS = ["apple", "bread", "milk", "rice", "tea", "soap", "eggs", "salt", "jam", "fish", "corn", "oil", "pens", "tape"]


@dataclass
class DocumentSample:
    image: Image.Image
    question: str
    answer: str
    kind: str

    def to_chat(self, question_first: bool = False) -> dict:
        """TRL vision format: `{"messages": [...], "images": [image]}`; `question_first` puts the question before
        the image, so the vision tokens (and Vision Remember) see it."""
        user = [{"type": "image"}, {"type": "text", "text": self.question}]
        return {
            "messages": [
                {"role": "user", "content": user[::-1] if question_first else user},
                {"role": "assistant", "content": [{"type": "text", "text": self.answer}]},
            ],
            "images": [self.image],
        }


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def render_receipt(rng: random.Random, size: int = 336) -> DocumentSample:
    """A receipt with 3-6 priced lines and a total; asks for one line's price or the total."""
    lines = [(item, rng.randint(1, 99)) for item in rng.sample(ITEMS, rng.randint(3, 6))]
    total = sum(price for _, price in lines)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    font = _font(max(10, size // 14))
    step = size // (len(lines) + 3)
    draw.text((size * 0.08, step * 0.4), "RECEIPT", fill="black", font=font)
    for row, (item, price) in enumerate(lines, start=1):
        draw.text((size * 0.08, step * row), item, fill="black", font=font)
        draw.text((size * 0.7, step * row), f"{price}", fill="black", font=font)
    draw.line((size * 0.05, step * (len(lines) + 1), size * 0.95, step * (len(lines) + 1)), fill="black")
    draw.text((size * 0.08, step * (len(lines) + 1.3)), "total", fill="black", font=font)
    draw.text((size * 0.7, step * (len(lines) + 1.3)), f"{total}", fill="black", font=font)
    if rng.random() < 0.3:
        return DocumentSample(image, "What is the total?", str(total), "receipt")
    item, price = rng.choice(lines)
    return DocumentSample(image, f"What is the price of {item}?", str(price), "receipt")


def render_table(rng: random.Random, size: int = 336) -> DocumentSample:
    """A 3x3 to 4x4 table of numbers with lettered columns; asks for one cell."""
    rows, cols = rng.randint(3, 4), rng.randint(3, 4)
    values = [[rng.randint(0, 99) for _ in range(cols)] for _ in range(rows)]
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    font = _font(max(10, size // 14))
    cell_w, cell_h = size / (cols + 1), size / (rows + 1)
    for c in range(cols):
        draw.text(((c + 1.25) * cell_w, 0.3 * cell_h), "ABCD"[c], fill="black", font=font)
    for r in range(rows):
        draw.text((0.3 * cell_w, (r + 1.3) * cell_h), str(r + 1), fill="black", font=font)
        for c in range(cols):
            draw.rectangle(((c + 1) * cell_w, (r + 1) * cell_h, (c + 2) * cell_w, (r + 2) * cell_h), outline="black")
            draw.text(((c + 1.25) * cell_w, (r + 1.3) * cell_h), str(values[r][c]), fill="black", font=font)
    r, c = rng.randrange(rows), rng.randrange(cols)
    return DocumentSample(image, f"What is in row {r + 1}, column {'ABCD'[c]}?", str(values[r][c]), "table")


def render_bar_chart(rng: random.Random, size: int = 336) -> DocumentSample:
    """3-5 labelled bars with close values; asks for the tallest bar's label or one bar's value."""
    labels = rng.sample(["A", "B", "C", "D", "E", "F"], rng.randint(3, 5))
    values = rng.sample(range(10, 100), len(labels))
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    font = _font(max(9, size // 16))
    bar_w = size * 0.8 / len(labels)
    for k, (label, value) in enumerate(zip(labels, values, strict=True)):
        left, top = size * 0.1 + k * bar_w, size * 0.85 - value / 100 * size * 0.7
        draw.rectangle((left + bar_w * 0.15, top, left + bar_w * 0.85, size * 0.85), fill=(60, 90, 200))
        draw.text((left + bar_w * 0.35, size * 0.88), label, fill="black", font=font)
        draw.text((left + bar_w * 0.25, top - size * 0.07), str(value), fill="black", font=font)
    if rng.random() < 0.5:
        return DocumentSample(image, "Which bar is the tallest?", labels[values.index(max(values))], "bar_chart")
    k = rng.randrange(len(labels))
    return DocumentSample(image, f"What is the value of bar {labels[k]}?", str(values[k]), "bar_chart")


def render_digit_grid(rng: random.Random, size: int = 336, grid: int = 4, question: str = "cell") -> DocumentSample:
    """A `grid x grid` board of single small digits: the answer depends on detail finer than one pooled token.
    `question="cell"` asks for one digit, `"row"` for a whole row, `"all"` for every digit in reading order (digits
    separated by spaces), `"all_compact"` for every digit in reading order without separators (`"3570..."`),
    `"all_labelled"` for every digit after its cell's letter, `a`, `b`, ... in reading order (`"a3b5c7d0..."`): the
    letter names the cell, so a model finds a digit by what it reads, not by counting answer tokens."""
    digits = [[rng.randrange(10) for _ in range(grid)] for _ in range(grid)]
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    cell = size / grid
    font = _font(max(6, int(cell * 0.7)))
    for r in range(grid):
        for c in range(grid):
            draw.text((c * cell + cell * 0.25, r * cell + cell * 0.05), str(digits[r][c]), fill="black", font=font)
    r, c = rng.randrange(grid), rng.randrange(grid)
    flat = [str(d) for row in digits for d in row]
    if question in ("all", "all_compact"):
        return DocumentSample(image, "Read the grid.", (" " if question == "all" else "").join(flat), "digit_grid")
    if question == "all_labelled":
        if grid * grid > 26:
            raise ValueError(f"question='all_labelled' names cells a-z: at most a 5x5 grid, got {grid}x{grid}")
        labels = "abcdefghijklmnopqrstuvwxyz"
        return DocumentSample(image, "Read the grid.", "".join(labels[k] + d for k, d in enumerate(flat)), "digit_grid")
    if question == "row":
        return DocumentSample(image, f"Read row {r + 1}.", " ".join(map(str, digits[r])), "digit_grid")
    return DocumentSample(image, f"Digit at row {r + 1}, column {c + 1}?", str(digits[r][c]), "digit_grid")


RENDERERS = {
    "receipt": render_receipt,
    "table": render_table,
    "bar_chart": render_bar_chart,
    "digit_grid": render_digit_grid,
}


def content_key(image: Image.Image) -> str:
    """Digest of an image's pixels, to check that splits share no image."""
    return hashlib.sha1(image.tobytes()).hexdigest()


def generate_samples(num_samples: int, seed: int = 0, split: str = "train", kinds=KINDS, size: int = 336, **kwargs):
    """`num_samples` `DocumentSample`s, deterministic for `(seed, split)`; splits use disjoint seed streams."""
    if split not in SPLIT_SEED_OFFSETS:
        raise ValueError(f"split must be one of {list(SPLIT_SEED_OFFSETS)}, got {split!r}")
    unknown = set(kinds) - set(RENDERERS)
    if unknown:
        raise ValueError(f"unknown document kinds {sorted(unknown)}; known: {list(RENDERERS)}")
    samples = []
    for index in range(num_samples):
        rng = random.Random(seed * 10_000_019 + SPLIT_SEED_OFFSETS[split] + index)
        kind = kinds[index % len(kinds)]
        extra = kwargs if kind == "digit_grid" else {}  # grid / question options belong to digit grids only
        samples.append(RENDERERS[kind](rng, size=size, **extra))
    return samples


def synthetic_document_dataset(
    num_samples: int,
    seed: int = 0,
    split: str = "train",
    kinds=KINDS,
    size: int = 336,
    exclude=None,
    question_first: bool = False,
    **kwargs,
):
    """A `datasets.Dataset` with `messages` and `images` columns (TRL's VLM format).

    `exclude`: content keys (e.g. the training images') that must not appear; matching samples are dropped.
    """
    from datasets import Dataset

    rows = []
    for sample in generate_samples(num_samples, seed, split, kinds, size, **kwargs):
        if exclude is not None and content_key(sample.image) in exclude:
            continue
        rows.append(sample.to_chat(question_first))
    return Dataset.from_list(rows)


__all__ = [
    "DocumentSample",
    "KINDS",
    "content_key",
    "generate_samples",
    "synthetic_document_dataset",
]
