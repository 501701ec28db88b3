# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Training and evaluation data of `llava-vr sft`, in TRL's vision format (`messages` and `images` columns).

Sources (one of): the offline synthetic documents of `llava_vr.data.synthetic_documents` (default), a `datasets`
dataset (`--dataset`: a Hub name, a local data folder for `load_dataset`, or a `save_to_disk` folder), or a JSONL
file of `{image, question, answer}` lines with `--image_root`.
"""

from __future__ import annotations

import os


def jsonl_dataset(path, image_root, num_threads=None):
    """`{image, question, answer}` lines -> a `datasets.Dataset` with `messages` and lazily decoded `images`; every
    line and image is checked first (`read_jsonl_documents`: a `LlavaVRRefusal` lists all bad lines)."""
    from datasets import Dataset, Image, List

    from llava_vr.data.jsonl_documents import read_jsonl_documents

    rows = {"messages": [], "images": []}
    for _, image_path, question, answer in read_jsonl_documents(path, image_root, num_threads):
        rows["messages"].append([
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ])
        rows["images"].append([image_path])
    return Dataset.from_dict(rows).cast_column("images", List(Image()))


def named_dataset(name: str, config: str | None, split: str):
    """Split `split` of a `save_to_disk` folder or of `load_dataset(name, config)`; checks TRL's vision columns."""
    from datasets import load_dataset, load_from_disk

    saved = os.path.isdir(name) and any(
        os.path.exists(os.path.join(name, marker)) for marker in ("dataset_info.json", "dataset_dict.json")
    )
    if saved:
        dataset = load_from_disk(name)
        if hasattr(dataset, "keys"):  # DatasetDict
            dataset = dataset[split]
    else:
        dataset = load_dataset(name, config, split=split)
    missing = {"messages", "images"} - set(dataset.column_names)
    if missing:
        from .preflight import SFTRefusal

        raise SFTRefusal(f"dataset {name} lacks the columns {sorted(missing)} (TRL's vision format: `messages` "
                         "chats with {'type': 'image'} items, and their `images`)")
    return dataset


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
    else:
        dataset = synthetic_documents(options, seed, "train", options.num_samples)
    if options.max_train_samples is not None:
        dataset = dataset.select(range(min(options.max_train_samples, len(dataset))))
    return dataset


def load_eval_documents(options, seed: int = 0, num_threads: int | None = None):
    """The evaluation dataset: `--dataset_eval_split` of `--dataset`, `--eval_jsonl`, or the synthetic validation
    split (`--num_eval_samples`, a seed stream disjoint from training's)."""
    if options.dataset:
        return named_dataset(options.dataset, options.dataset_config, options.dataset_eval_split)
    if options.eval_jsonl:  # `check_options` refuses --jsonl with evaluation but without --eval_jsonl
        return jsonl_dataset(options.eval_jsonl, options.image_root, num_threads)
    return synthetic_documents(options, seed, "validation", options.num_eval_samples)


__all__ = ["jsonl_dataset", "load_documents", "load_eval_documents", "named_dataset", "synthetic_documents"]
