# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""A JSONL file of `{"image": PATH, "question": TEXT, "answer": TEXT}` lines, read and checked before any training.

    rows = read_jsonl_documents("data.jsonl", image_root="images")   # [(line number, image path, question, answer)]

Every line is parsed and every image opened and decoded completely (`verify()`, then `load()` on a fresh handle:
truncated PNGs and JPEGs included) before the rows are returned; all bad lines are reported at once, with file, line
and reason, in one `LlavaVRRefusal` (a `ValueError`; `llava-vr sft` prints it and exits with status 2). Images are
checked in threads with a progress bar (`datasets`' tqdm, so `datasets.disable_progress_bars()` silences it).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from PIL import Image, ImageFile

from ..hub.refusals import LlavaVRRefusal, listed_refusal

FIELDS = ("image", "question", "answer")
MAX_LISTED = 100  # bad lines shown in the error message; the full list goes to a file beyond that


@contextmanager
def truncated_images_refused():
    """PIL's default for the duration, a truncated file raising on `load()`, whatever another library set: lmms-eval
    sets `ImageFile.LOAD_TRUNCATED_IMAGES = True` when imported, which would let a cut file pass as whole. The flag is
    PIL's global: enter this once around a batch of checks, not in each of several threads."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _check_image(path: str) -> str | None:
    if not os.path.isfile(path):
        return f"no image file {path}"
    try:
        with Image.open(path) as image:
            image.verify()  # structure and checksums; leaves the handle unusable, hence a second open
        with Image.open(path) as image:
            image.load()  # decodes every pixel: "image file is truncated" shows up here
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        return f"unreadable image {path} ({type(error).__name__}: {error})"
    return None


def check_image(path: str) -> str | None:
    """`None` when `path` is an image that decodes completely, else why not (missing, unreadable, truncated)."""
    with truncated_images_refused():
        return _check_image(path)


def parse_line(line: str) -> tuple[dict | None, str | None]:
    """`(record, None)` for a usable line, else `(None, reason)`."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return None, f"invalid JSON ({error})"
    if not isinstance(record, dict):
        return None, f"not a JSON object but {type(record).__name__} (each line needs {', '.join(FIELDS)})"
    missing = [name for name in FIELDS if name != "image" and record.get(name) is None]  # no image: text only
    if missing:
        return None, f"missing keys {missing} (each line needs {', '.join(FIELDS)}; image may be left out)"
    if record.get("image") is not None and (not isinstance(record["image"], str) or not record["image"].strip()):
        return None, f"'image' must be a file path, got {record['image']!r}"
    for name in ("question", "answer"):
        if not isinstance(record[name], (str, int, float)) or not str(record[name]).strip():
            return None, f"'{name}' must be non-empty text, got {record[name]!r}"
    return record, None


def report(path: str, problems: list[tuple[int, str]], total: int, image_root: str | None) -> str:
    """The error message: a summary line, then `FILE:LINE: reason` for each bad line (the first `MAX_LISTED`, the
    rest in a file whose path the message gives)."""
    lines = [f"{path}:{number}: {reason}" for number, reason in problems]
    head = f"{path}: {len(problems)} of {total} lines cannot be used; fix or remove them (nothing was trained):"
    if image_root is not None and total and sum(reason.startswith("no image file") for _, reason in problems) == total:
        head += f"\n  none of the images exists under --image_root {image_root}: is it the right folder?"
    return listed_refusal(head, lines, MAX_LISTED, "bad-lines")


def check_images(paths: list[str], num_threads: int | None = None, desc: str = "Checking images") -> list[str | None]:
    """`check_image` of every path (threads: PIL decodes without the GIL), with a progress bar."""
    from datasets.utils import tqdm

    workers = num_threads or min(8, os.cpu_count() or 1)
    with truncated_images_refused(), ThreadPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(_check_image, paths), total=len(paths), desc=desc, unit="image"))


def read_jsonl_documents(path: str, image_root: str | None = None, num_threads: int | None = None):
    """`[(line number, image path, question, answer)]` for the non-blank lines of `path` (image paths joined to
    `image_root`; `None` for a text-only line, one without `image`); raises `LlavaVRRefusal` listing every bad line
    when any line or image is unusable."""
    rows, problems, total = [], [], 0
    try:
        with open(path, encoding="utf-8") as handle:
            lines = list(enumerate(handle, start=1))
    except (OSError, UnicodeDecodeError) as error:
        raise LlavaVRRefusal(f"cannot read {path}: {error}") from None
    for number, line in lines:
        if not line.strip():
            continue
        total += 1
        record, reason = parse_line(line)
        if reason:
            problems.append((number, reason))
            continue
        image = record.get("image")
        image = os.path.join(image_root, image) if image_root and image is not None else image
        rows.append((number, image, str(record["question"]), str(record["answer"])))
    if not total:
        raise LlavaVRRefusal(f"{path} has no data lines (one {{image, question, answer}} object per line)")
    with_image = [row for row in rows if row[1] is not None]  # a line without image is a text-only sample
    reasons = check_images([row[1] for row in with_image], num_threads, desc=f"Checking {os.path.basename(path)}")
    problems += [(row[0], reason) for row, reason in zip(with_image, reasons, strict=True) if reason]
    if problems:
        raise LlavaVRRefusal(report(path, sorted(problems), total, image_root))
    return rows


__all__ = ["FIELDS", "check_image", "check_images", "read_jsonl_documents"]
