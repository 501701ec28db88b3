# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Training and evaluation data of `llava-vr sft`, in TRL's vision format (`messages` and `images` columns), plus a
`videos` column: per row a list of videos, each a list of frames (`List(List(Image()))`: PIL images or image files)
or a video file path (`List(Value("string"))`: GIF / APNG, mp4 / webm with PyAV), matched in order to the row's
`{"type": "video"}` items (`collator.LlavaVRVisionCollator`).

Sources (one of): the offline synthetic documents of `llava_vr.data.synthetic_documents` (default), a `datasets`
dataset (`--dataset`: a Hub name, a local data folder for `load_dataset`, or a `save_to_disk` folder), or a JSONL
file of `{image, question, answer}` lines with `--image_root`, or LLaVA's conversation JSON / JSONL (`--llava_data`,
`llava_vr.data.llava_conversations`).
"""

from __future__ import annotations

import os

from ..data.llava_conversations import llava_conversation_dataset
from ..hub.refusals import LlavaVRRefusal, one_line


def jsonl_dataset(path, image_root, num_threads=None):
    """`{image, question, answer}` lines (`image` left out: text only) -> a `datasets.Dataset` with `messages` and
    lazily decoded `images`; every line and image is checked first (`read_jsonl_documents`: a `LlavaVRRefusal`
    lists all bad lines)."""
    from datasets import Dataset, Image, List

    from llava_vr.data.jsonl_documents import read_jsonl_documents

    rows = {"messages": [], "images": []}
    for _, image_path, question, answer in read_jsonl_documents(path, image_root, num_threads):
        image = [] if image_path is None else [{"type": "image"}]  # a line without image: a text-only sample
        rows["messages"].append(
            [
                {"role": "user", "content": [*image, {"type": "text", "text": question}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]},
            ]
        )
        rows["images"].append([] if image_path is None else [image_path])
    return Dataset.from_dict(rows).cast_column("images", List(Image()))


def named_dataset(name: str, config: str | None, split: str, role: str = "training"):
    """Split `split` of a `save_to_disk` folder or of `load_dataset(name, config)`; checks TRL's vision columns and
    that every row's image / video placeholders match its images / videos (`check_image_placeholders`). A dataset
    without splits (one saved `Dataset`) is the training data only: asking it for an evaluation split is refused (it
    would evaluate on the training rows)."""
    from datasets import load_dataset, load_from_disk

    saved = os.path.isdir(name) and any(
        os.path.exists(os.path.join(name, marker)) for marker in ("dataset_info.json", "dataset_dict.json")
    )
    option = "--dataset_split" if role == "training" else "--dataset_eval_split"
    if saved:
        dataset = load_from_disk(name)
        if hasattr(dataset, "keys"):  # DatasetDict
            if split not in dataset:
                raise LlavaVRRefusal(f"dataset {name} has no split {split!r} ({option}); its splits: {sorted(dataset)}")
            dataset = dataset[split]
        elif role != "training":
            raise LlavaVRRefusal(
                f"dataset {name} is one split (a saved Dataset), the training rows: evaluating on it "
                "would score the model on what it trains on. Save a DatasetDict with a held-out split "
                f"({option}), or drop --eval_strategy"
            )
    else:
        try:
            dataset = load_dataset(name, config, split=split)
        except ValueError as error:  # "Unknown split", "Bad split"
            if "split" not in str(error).lower():
                raise
            raise LlavaVRRefusal(f"dataset {name} has no split {split!r} ({option}): {one_line(error)}") from None
    columns = set(dataset.column_names)
    if "messages" not in columns or not {"images", "videos"} & columns:
        missing = sorted({"messages"} - columns) + ([] if {"images", "videos"} & columns else ["images (or videos)"])
        raise LlavaVRRefusal(
            f"dataset {name} lacks the columns {missing} (TRL's vision format: `messages` "
            "chats with {'type': 'image'} / {'type': 'video'} items, and their `images` / `videos`)"
        )
    check_image_placeholders(dataset, f"dataset {name} ({split})")
    return dataset


MAX_LISTED_ROWS = 20


def placeholder_counts(dataset, kind: str = "image", column: str = "images"):
    """`(placeholders, items)` per row, as numpy arrays: the `{"type": kind}` items of each row's `messages` and the
    length of its `column` list (zeros when the dataset has no such column), read from the Arrow columns (no image or
    video decoded, no row built in Python)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    has_column = column in dataset.column_names
    placeholders, items = [], []
    columns = ["messages", column] if has_column else ["messages"]
    for table in dataset.select_columns(columns).with_format("arrow").iter(batch_size=50_000):
        rows = len(table)
        if has_column:
            items.append(pc.list_value_length(table.column(column).combine_chunks()).fill_null(0).to_numpy(False))
        else:
            items.append(np.zeros(rows, dtype=np.int64))
        messages = table.column("messages").combine_chunks()
        counts = np.zeros(rows, dtype=np.int64)
        content = pc.list_flatten(messages).field("content")
        if pa.types.is_list(content.type) or pa.types.is_large_list(content.type):
            turn_rows = pc.list_parent_indices(messages).to_numpy(False)
            item_turns = pc.list_parent_indices(content).to_numpy(False)
            is_kind = pc.equal(pc.list_flatten(content).field("type"), kind).fill_null(False).to_numpy(False)
            counts = np.bincount(turn_rows[item_turns[is_kind]], minlength=rows)
        placeholders.append(counts)  # string contents (text-only chats) hold no image or video item
    if not placeholders:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(placeholders), np.concatenate(items)


def image_placeholder_counts(dataset):
    """`placeholder_counts` of `{"type": "image"}` items and `images`."""
    return placeholder_counts(dataset, "image", "images")


def check_image_placeholders(dataset, what: str) -> None:
    """Refuses rows whose `{"type": "image"}` items do not match their `images` in number, or whose
    `{"type": "video"}` items do not match their `videos` (TRL fails on them mid training, with a long traceback);
    lists the first `MAX_LISTED_ROWS` by row index."""
    _check_placeholders(dataset, what, "image", "images")
    _check_placeholders(dataset, what, "video", "videos")


def _check_placeholders(dataset, what: str, kind: str, column: str) -> None:
    import numpy as np

    placeholders, items = placeholder_counts(dataset, kind, column)
    bad = np.flatnonzero(placeholders != items)
    if not len(bad):
        return
    listed = [
        f"  row {i}: {placeholders[i]} {{'type': '{kind}'}} item(s) in messages, {items[i]} {kind}(s)"
        for i in bad[:MAX_LISTED_ROWS]
    ]
    more = [f"  ... and {len(bad) - MAX_LISTED_ROWS} more"] if len(bad) > MAX_LISTED_ROWS else []
    raise LlavaVRRefusal(
        "\n".join(
            [
                f"{what}: {len(bad)} of {len(items)} rows have {kind} placeholders that do not match their {column}; "
                f"each {kind} needs one {{'type': '{kind}'}} item in the row's messages (nothing was trained):",
                *listed,
                *more,
            ]
        )
    )


def synthetic_documents(options, seed: int, split: str, num_samples: int):
    """`num_samples` synthetic documents of `options.kinds` (default: all) at `options.image_size` px."""
    from llava_vr.data.synthetic_documents import KINDS, synthetic_document_dataset

    kinds = tuple(options.kinds.split(",")) if options.kinds else KINDS
    size = options.image_size or (56 if options.tiny else 336)
    return synthetic_document_dataset(num_samples, seed=seed, split=split, kinds=kinds, size=size)


def load_documents(options, seed: int = 0, num_threads: int | None = None):
    """The training dataset of `options` (first `options.max_train_samples` rows when given); `num_threads` check
    a JSONL's images."""
    if options.dataset:
        dataset = named_dataset(options.dataset, options.dataset_config, options.dataset_split)
    elif options.jsonl:
        dataset = jsonl_dataset(options.jsonl, options.image_root, num_threads)
    elif options.llava_data:
        dataset = llava_conversation_dataset(options.llava_data, options.image_root)
    else:
        dataset = synthetic_documents(options, seed, "train", options.num_samples)
    if options.max_train_samples is not None:
        dataset = dataset.select(range(min(options.max_train_samples, len(dataset))))
    return dataset


def load_eval_documents(options, seed: int = 0, num_threads: int | None = None):
    """The evaluation dataset: `--dataset_eval_split` of `--dataset`, `--eval_jsonl`, or the synthetic validation
    split (`--num_eval_samples`, a seed stream disjoint from training's)."""
    if options.dataset:
        return named_dataset(options.dataset, options.dataset_config, options.dataset_eval_split, role="evaluation")
    if options.eval_jsonl:  # `check_options` refuses --jsonl with evaluation but without --eval_jsonl
        return jsonl_dataset(options.eval_jsonl, options.image_root, num_threads)
    if options.eval_llava_data:  # likewise for --llava_data
        return llava_conversation_dataset(options.eval_llava_data, options.image_root)
    return synthetic_documents(options, seed, "validation", options.num_eval_samples)


__all__ = ["jsonl_dataset", "load_documents", "load_eval_documents", "named_dataset", "synthetic_documents"]
