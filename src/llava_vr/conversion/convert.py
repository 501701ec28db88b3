# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Convert a LLaVA-NeXT / LLaVA-OneVision checkpoint (Qwen2 LLM) into a LLaVA-VR `trust_remote_code` folder.

    llava-vr convert --source SRC --output DIR [options]      (options: `options.py`, `llava-vr convert --help`)

SRC is a local folder (or a Hub id, downloaded with `snapshot_download` when no such folder exists, `resolve.py`)
holding a Transformers LLaVA-NeXT / OneVision checkpoint (current or llava-hf layout) or an original LLaVA-NeXT-repo
(lmms-lab) checkpoint (`sources.py`, `lmms_lab.py`). The vision tower, the LLM, the projector MLP (where its input
width is unchanged) and `image_newline` are carried over; new modules (Vision Remember, extra projector layers) get
the model's own initialisation, under which VR is the identity, so with `--projector-type mlp` the converted model
reproduces the source's logits. The source's image processor is kept (from whichever file holds it); a Transformers
source without one needs `--image-mean/--image-std` or `--assume-clip-normalisation`.

The output is written into a temporary folder beside DIR (permissions as the umask gives, like `save_pretrained`)
and renamed into place only when complete; a non-empty DIR is replaced only with `--overwrite`. Refusals exit with
status 2 and one line on stderr. The card records the source's Hub id as `base_model` (or `--base-model`), which
`llava-vr push` keeps.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from ..configuration_llava_vr import LlavaVRConfig
from ..hub.card import render_model_card, source_card_metadata
from ..hub.push import push_folder
from ..hub.refusals import LlavaVRRefusal, log, run_command
from .artifacts import build_generation_config, build_processor, load_tokenizer, source_image_processor
from .detect import load_source
from .lmms_lab import lmms_lab_plan, place_image_token
from .options import parse_args
from .plan import Plan, build_config, transformers_plan
from .sources import Source, read_state_dict
from .weights import WeightReport, build_model, grow_embeddings, plan_weights, source_dtype


def check_output(output: Path, source: Path | None, overwrite: bool) -> None:
    """Refuses an output that is a file, a non-empty folder (without `overwrite`) or overlaps the source."""
    if output.exists() and not output.is_dir():
        raise LlavaVRRefusal(f"--output {output} exists and is not a folder")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise LlavaVRRefusal(f"--output {output} exists and is not empty (pass --overwrite to replace it)")
    resolved = output.resolve()
    if source is not None and (resolved == source or source in resolved.parents or resolved in source.parents):
        raise LlavaVRRefusal(f"--output {output} overlaps the source folder {source}")


def move_into_place(tmp: Path, output: Path) -> None:
    """Renames `tmp` to `output`, replacing an existing `output` only once the rename succeeded."""
    backup = None
    if output.exists():
        backup = output.with_name(f".{output.name}.old-{os.getpid()}")
        output.rename(backup)
    try:
        tmp.rename(output)
    except BaseException:
        if backup is not None:
            backup.rename(output)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def apply_umask(folder: Path) -> None:
    """Gives `folder` and everything in it the permissions plain `mkdir` / `open` give under the umask (0755 / 0644
    under the usual 022): `mkdtemp` makes 0700 and safetensors >= 0.8 writes weights 0600, which would leave the
    converted model unreadable for other users or a serving container."""
    umask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def write_folder(output: Path, model, processor, card) -> None:
    """Saves model, processor and card into a temporary folder beside `output`, then moves it into place."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        log(f"Saving to {output} ...")
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        card.save(tmp / "README.md")
        apply_umask(tmp)
        move_into_place(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def conversion_card(src: Source, config: LlavaVRConfig, report: WeightReport, plan: Plan, args):
    """The converted folder's model card: `base_model` = the source's Hub id (`--base-model`, else found), license /
    datasets default to the source card's."""
    metadata = source_card_metadata(src.path)
    base_model = args.base_model or src.source_id
    if base_model is None:
        log(
            "  note: the source's Hub id is unknown (a local folder), so the card names no base_model: pass "
            "--base-model OWNER/NAME here or to `llava-vr push`"
        )
    return render_model_card(
        config,
        base_model=base_model,
        source_name=base_model or src.path.name,
        source_description=src.description,
        report=report,
        repo_id=args.push_to_hub,
        license=args.license or metadata.get("license") or "apache-2.0",
        datasets=args.datasets or metadata.get("datasets"),
        notes=plan.notes,
    )


def convert_checkpoint(args: argparse.Namespace) -> Path:
    """Converts `args.source` into `args.output` (the parsed command line); returns the output folder."""
    output = Path(args.output).expanduser()
    src = load_source(args.source)
    check_output(output, src.path, args.overwrite)
    log(f"Found: {src.description} in {src.path}")

    plan = transformers_plan(src) if src.kind != "lmms_lab" else lmms_lab_plan(src, args)
    tokenizer = load_tokenizer(Path(args.tokenizer) if args.tokenizer else src.path, plan.needs_image_token)
    grow = place_image_token(plan, tokenizer) if plan.needs_image_token else 0
    config = build_config(plan, args)
    processor = build_processor(source_image_processor(src, plan, config, args), tokenizer, config)

    state_dict = read_state_dict(src)
    grown = grow_embeddings(state_dict, grow, bool(config.tie_word_embeddings)) if grow else []
    report = plan_weights(config, state_dict)
    report.grown = grown
    dtype = source_dtype(state_dict) if args.dtype == "auto" else getattr(torch, args.dtype)
    log(
        f"Building LLaVA-VR ({config.projector_type}, VR before layers {config.vision_remember_layers or 'none'}, "
        f"{config.num_image_tokens_per_tile} tokens per tile, {str(dtype).removeprefix('torch.')})"
    )
    model = build_model(config, state_dict, dtype)
    del state_dict
    model.generation_config = build_generation_config(src, tokenizer)

    write_folder(output, model, processor, conversion_card(src, config, report, plan, args))
    print_summary(output, report, plan)
    return output


def print_summary(output: Path, report: WeightReport, plan: Plan) -> None:
    log(f"Wrote {output}")
    for note in plan.notes:
        log(f"  note: {note}")
    for component, keys in report.carried.items():
        log(f"  carried  {component:<16} {len(keys):>5} tensors")
    for module, keys in report.new.items():
        log(f"  NEW      {module} ({len(keys)} tensors, untrained)")
    if report.dropped:
        log(
            f"  dropped  {len(report.dropped)} source tensors: {', '.join(report.dropped[:4])}"
            + (" ..." if len(report.dropped) > 4 else "")
        )
    log(f"  new parameters: {report.parameters_new:,} of {report.parameters_total:,}")


def convert_and_push(args: argparse.Namespace) -> None:
    """The output checked before anything heavy, the conversion (Transformers' logging quiet), then the upload."""
    source = Path(args.source).expanduser()
    check_output(Path(args.output).expanduser(), source.resolve() if source.exists() else None, args.overwrite)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        output = convert_checkpoint(args)
    finally:
        hf_logging.set_verbosity(verbosity)
    if args.push_to_hub:
        message = args.commit_message or f"Add LLaVA-VR conversion of {args.base_model or args.source}"
        push_folder(
            output,
            args.push_to_hub,
            private=args.private,
            dry_run=args.dry_run,
            base_model=args.base_model,
            commit_message=message,
        )


def main(argv: list[str] | None = None) -> int:
    """`llava-vr convert`: 0 when done, 2 on a refusal, 1 on an unexpected error, 130 when interrupted (one line on
    stderr each; `--debug` raises instead)."""
    args = parse_args(argv)
    return run_command(lambda: convert_and_push(args), debug=args.debug, catch_errors=True)
