# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Writes LLaVA-VR's local lmms-eval tasks into a folder: the YAML files and `utils.py` of `tasks/` (package data) and
their data, rendered deterministically from `llava_vr.data.synthetic_documents` (PNG images + JSON lines).

- `llava_vr_documents` (group): receipts, tables, bar charts and digit grids of the `benchmark` split (its own seed
  stream, see `SPLIT_SEED_OFFSETS`: no image of it is drawn by the SFT examples' `train` / `validation` splits or the
  experiment's), `--documents` samples of `--image-size` px, the kinds in turn, image first (how `llava-vr sft`
  trains on these documents).
- `llava_vr_digit_grid`: the visual-forgetting experiment's held-out test images (`held_out_samples` of the `cpu`
  preset, seed `--digit-grid-seed`; 1 is the bundled model's), question before the image, as the experiment trains
  and scores them.

    python -m llava_vr.evaluation.task_builder TASK_DIR            # then: lmms-eval --include_path TASK_DIR ...
"""

from __future__ import annotations

import argparse
import json
import shutil
from importlib.resources import files
from pathlib import Path

DOCUMENT_KINDS = ("receipt", "table", "bar_chart", "digit_grid")


def _write(folder: Path, name: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))


def _save_samples(samples, out: Path, subfolder: str, task: str, question_first: bool) -> list[dict]:
    """Saves each sample's image as `<subfolder>/images/<task>-<index>.png`; returns the JSON rows."""
    images = out / subfolder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, sample in enumerate(samples):
        name = f"{task}-{index:04d}.png"
        sample.image.save(images / name)
        rows.append(
            dict(
                id=f"{task}-{index:04d}",
                task=task,
                kind=sample.kind,
                image=f"{subfolder}/images/{name}",
                question=sample.question,
                answer=sample.answer,
                question_first=question_first,
            )
        )
    return rows


def copy_task_files(out: Path) -> None:
    """The YAML files and `utils.py` of the package's `tasks/` folder."""
    out.mkdir(parents=True, exist_ok=True)
    for entry in files("llava_vr.evaluation").joinpath("tasks").iterdir():
        if entry.name.endswith((".yaml", "_yaml")) or entry.name == "utils.py":
            (out / entry.name).write_bytes(entry.read_bytes())


def build_documents(out: Path, num_samples: int = 240, seed: int = 0, image_size: int = 336) -> dict[str, int]:
    """`llava_vr_documents/<kind>.jsonl` (+ images): `num_samples` of the `benchmark` split, the kinds in turn."""
    from llava_vr.data.synthetic_documents import generate_samples

    samples = generate_samples(num_samples, seed, "benchmark", kinds=DOCUMENT_KINDS, size=image_size)
    counts = {}
    for kind in DOCUMENT_KINDS:
        task = f"llava_vr_documents_{kind}"
        rows = _save_samples([s for s in samples if s.kind == kind], out, "llava_vr_documents", task, False)
        _write(out / "llava_vr_documents", f"{kind}.jsonl", rows)
        counts[task] = len(rows)
    return counts


def build_digit_grid(out: Path, num_samples: int = 200, seed: int = 1) -> dict[str, int]:
    """`llava_vr_digit_grid/data.jsonl` (+ images): the experiment's first `num_samples` held-out test images of
    `seed` (its `cpu` preset: 56 px, 4 x 4 digits, every cell labelled)."""
    from llava_vr.experiments.visual_forgetting_options import PRESETS
    from llava_vr.experiments.visual_forgetting_task import held_out_samples

    samples = held_out_samples(PRESETS["cpu"], seed, num_samples)
    rows = _save_samples(samples, out, "llava_vr_digit_grid", "llava_vr_digit_grid", True)
    _write(out / "llava_vr_digit_grid", "data.jsonl", rows)
    return {"llava_vr_digit_grid": len(rows)}


def build_tasks(
    out,
    documents: int = 240,
    document_seed: int = 0,
    image_size: int = 336,
    digit_grids: int = 200,
    digit_grid_seed: int = 1,
    overwrite: bool = False,
) -> dict[str, int]:
    """Writes every local task into `out` (refuses a non-empty folder unless `overwrite`); returns samples per task."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"{out} is not empty: pass overwrite=True (--overwrite) to rebuild the tasks there")
        shutil.rmtree(out)
    copy_task_files(out)
    counts = build_documents(out, documents, document_seed, image_size)
    counts.update(build_digit_grid(out, digit_grids, digit_grid_seed))
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llava-vr eval tasks",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("output_dir", type=Path, help="folder for the tasks (lmms-eval --include_path)")
    parser.add_argument("--documents", type=int, default=240, help="document samples, the four kinds in turn")
    parser.add_argument("--document-seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=336, help="document image side (a CLIP-336 tile)")
    parser.add_argument("--digit-grids", type=int, default=200, help="held-out digit grids of the experiment")
    parser.add_argument("--digit-grid-seed", type=int, default=1, help="experiment seed (1: the bundled model's)")
    parser.add_argument("--overwrite", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    counts = build_tasks(
        args.output_dir,
        args.documents,
        args.document_seed,
        args.image_size,
        args.digit_grids,
        args.digit_grid_seed,
        args.overwrite,
    )
    for task, count in counts.items():
        print(f"{task}: {count} samples")
    print(f"tasks written to {args.output_dir}: lmms-eval --include_path {args.output_dir} --tasks ...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = ["build_digit_grid", "build_documents", "build_tasks", "copy_task_files", "main"]
