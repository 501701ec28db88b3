# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""LLaVA's conversation data (LCS-558K, the LLaVA-NeXT 779K mixture, most document-instruction sets) read as it ships:
a JSON list or JSONL lines of

    {"id": "...", "image": "coco/train2017/0001.jpg",            # or a list of paths; absent for a text-only row
     "conversations": [{"from": "human", "value": "<image>\nWhat is ...?"}, {"from": "gpt", "value": "..."}, ...]}

with the images in a folder (`image_root`). Each row becomes a TRL chat (`messages`: user / assistant / system turns
whose content lists `{"type": "image"}` where `<image>` stood and the text around it; `images`: the row's image
paths), any number of turns.

Every row is checked before training, without decoding an image: it has turns with text and at least one `gpt`
reply, each image file exists, and the `<image>` markers match its images in number. All bad rows are reported at
once as `FILE:ROW (id ID): reason` in one `LlavaVRRefusal` (JSONL rows are line numbers, JSON rows 1-based list
positions). The rows are written through a generator into a `datasets.Dataset` (an Arrow file in the datasets
cache), with the images as paths that decode when a batch reads them: a 779K-row file is never held as decoded
images.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

from ..hub.refusals import LlavaVRRefusal, listed_refusal

IMAGE_MARKER = "<image>"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
MAX_LISTED = 100  # bad rows in the message; all of them in a file beyond that
_MARKER_SPLIT = re.compile(r"\s*" + re.escape(IMAGE_MARKER) + r"\s*")


def read_rows(path: str) -> Iterator[tuple[int, object]]:
    """`(row number, parsed row)` of a `.jsonl` file (line numbers; a line that is not JSON gives its
    `json.JSONDecodeError` as the row) or of a JSON list (1-based positions)."""
    try:
        if path.endswith(".jsonl"):
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    if line.strip():
                        try:
                            yield number, json.loads(line)
                        except json.JSONDecodeError as error:
                            yield number, error
            return
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LlavaVRRefusal(f"cannot read {path}: {error}") from None
    if not isinstance(data, list):
        raise LlavaVRRefusal(f"{path}: expected a JSON list of LLaVA conversation rows, got {type(data).__name__}")
    yield from enumerate(data, start=1)


def split_at_markers(text: str) -> list[dict]:
    """TRL content items of one turn: `{"type": "image"}` where `<image>` stood (with the whitespace around it, as
    LLaVA writes `<image>\\n`), `{"type": "text", "text": ...}` for the non-empty text between."""
    items = []
    for index, piece in enumerate(_MARKER_SPLIT.split(text)):
        if index:
            items.append({"type": "image", "text": None})
        if piece:
            items.append({"type": "text", "text": piece})
    return items


def convert_row(row, image_root: str | None) -> tuple[dict | None, str | None]:
    """`({"messages", "images"}, None)` for a usable row, else `(None, reason)`; checks image files exist (stat only)
    and that the `<image>` markers match the images."""
    if isinstance(row, json.JSONDecodeError):
        return None, f"invalid JSON ({row})"
    if not isinstance(row, dict):
        return None, f"not a JSON object but {type(row).__name__}"
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        return None, "no 'conversations' list"
    images = row.get("image")
    images = [] if images is None else [images] if isinstance(images, str) else images
    if not isinstance(images, list) or not all(isinstance(i, str) and i.strip() for i in images):
        return None, f"'image' must be a path or a list of paths, got {row.get('image')!r}"
    messages, markers = [], 0
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
            return None, f"turn {number} is not {{'from': human|gpt|system, 'value': text}}: {str(turn)[:80]}"
        markers += turn["value"].count(IMAGE_MARKER)
        content = split_at_markers(turn["value"])
        if not content:
            return None, f"turn {number} is empty"
        messages.append({"role": ROLES[turn["from"]], "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        return None, "no 'gpt' turn to learn from"
    if markers != len(images):
        return None, f"{markers} {IMAGE_MARKER} in the conversation but {len(images)} image(s)"
    paths = [os.path.join(image_root, image) if image_root else image for image in images]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        return None, f"no image file {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    return {"messages": messages, "images": paths}, None


def report(path: str, problems: list[tuple[int, str, str]], total: int, image_root: str | None) -> str:
    """The refusal: a summary line, then `FILE:ROW (id ID): reason` per bad row (beyond `MAX_LISTED`, in a file)."""
    lines = [f"{path}:{number}{f' (id {rid})' if rid else ''}: {reason}" for number, rid, reason in problems]
    head = f"{path}: {len(problems)} of {total} rows cannot be used; fix or remove them (nothing was trained):"
    if (
        image_root is not None
        and problems
        and all(reason.startswith("no image file") for *_, reason in problems)
        and len(problems) == total
    ):
        head += f"\n  none of the images exists under --image_root {image_root}: is it the right folder?"
    return listed_refusal(head, lines, MAX_LISTED, "bad-rows")


def check_llava_conversations(path: str, image_root: str | None = None) -> int:
    """Checks every row of `path` (see the module docstring) and returns how many there are; raises
    `LlavaVRRefusal` listing every bad row."""
    problems, total = [], 0
    for number, row in read_rows(path):
        total += 1
        _, reason = convert_row(row, image_root)
        if reason:
            problems.append((number, row.get("id") if isinstance(row, dict) else None, reason))
    if not total:
        raise LlavaVRRefusal(f"{path} has no rows (LLaVA conversation rows: id, image, conversations)")
    if problems:
        raise LlavaVRRefusal(report(path, problems, total, image_root))
    return total


def llava_conversation_dataset(path: str, image_root: str | None = None):
    """A `datasets.Dataset` of TRL chats (`messages`, lazily decoded `images`) from LLaVA's conversation JSON / JSONL,
    after `check_llava_conversations`. Written row by row through a generator (no decoded image held)."""
    from datasets import Dataset, Features, Image, List, Value

    check_llava_conversations(path, image_root)
    item = {"type": Value("string"), "text": Value("string")}
    features = Features(
        {
            "messages": List({"role": Value("string"), "content": List(item)}),
            "images": List(Image()),
        }
    )

    stamp = os.stat(path)  # part of the datasets cache key: an edited file is read again
    return Dataset.from_generator(
        chats,
        features=features,
        gen_kwargs={"path": path, "image_root": image_root, "stamp": (stamp.st_size, stamp.st_mtime_ns)},
    )


def chats(path: str, image_root: str | None, stamp=None) -> Iterator[dict]:
    """The TRL chats of a checked file, one row at a time (`stamp` only keys the datasets cache)."""
    for _, row in read_rows(path):
        yield convert_row(row, image_root)[0]


__all__ = [
    "IMAGE_MARKER",
    "chats",
    "check_llava_conversations",
    "convert_row",
    "llava_conversation_dataset",
    "read_rows",
]
