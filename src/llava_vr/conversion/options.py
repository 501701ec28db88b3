# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The command line of `llava-vr convert`.

Vision Remember flags left unset leave LlavaVRConfig's own default (the converter hard-codes none); their names are
the config fields' (`--vision-remember-hidden-size` -> `vision_remember_hidden_size`, see `plan.VR_FLAG_FIELDS`).
"""

from __future__ import annotations

import argparse

from ..hub.ids import is_hub_id
from ..registries_llava_vr import PROJECTORS, SALIENCY_MODES, VR_INTERACTIONS

DTYPES = ("float32", "bfloat16", "float16")


def add_vision_remember_flags(parser: argparse.ArgumentParser) -> None:
    """`--vision-remember-*`: every Vision Remember setting; None (the config's default) when not given."""
    vr = parser.add_argument_group("Vision Remember (unset: LlavaVRConfig's default)")
    layers = vr.add_mutually_exclusive_group()
    layers.add_argument(
        "--vision-remember-layers", type=int, nargs="+", metavar="L", help="0-based decoder layers VR runs before"
    )
    layers.add_argument("--no-vision-remember", action="store_true", help="no Vision Remember modules")
    vr.add_argument(
        "--vision-remember-feature-layers",
        type=int,
        nargs="+",
        metavar="I",
        help="tower hidden states VR reads (0 = embeddings)",
    )
    vr.add_argument("--vision-remember-interaction", choices=list(VR_INTERACTIONS))
    vr.add_argument("--vision-remember-hidden-size", type=int, metavar="D", help="width of VR's attention")
    vr.add_argument("--vision-remember-num-heads", type=int, metavar="H", help="heads of VR's attentions")
    vr.add_argument(
        "--vision-remember-window-size", type=int, metavar="W", help="side of the feature window a token reads (sela)"
    )
    vr.add_argument(
        "--vision-remember-window-layout",
        metavar="LAYOUT",
        help="how windows larger than a token's region are laid out (LlavaVRConfig's "
        "vision_remember_window_layout, e.g. partition or centred)",
    )
    vr.add_argument(
        "--vision-remember-saliency",
        choices=list(SALIENCY_MODES),
        help="; ".join(f"{name}: {text}" for name, text in SALIENCY_MODES.items()),
    )
    vr.add_argument(
        "--vision-remember-self-attention",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="token self-attention among one image's vision tokens (--no-...: without, the paper's v1)",
    )


def add_image_processor_flags(parser: argparse.ArgumentParser) -> None:
    """The pixel normalisation, when the source's image processor is missing (or is to be replaced)."""
    group = parser.add_argument_group("image normalisation (needed when the source has no image processor)")
    group.add_argument(
        "--image-mean",
        type=float,
        nargs=3,
        metavar=("R", "G", "B"),
        help="the model's pixel mean (with --image-std); replaces the source image processor's",
    )
    group.add_argument("--image-std", type=float, nargs=3, metavar=("R", "G", "B"), help="the model's pixel std")
    group.add_argument(
        "--assume-clip-normalisation",
        action="store_true",
        help="a source without an image processor was trained with CLIP's mean/std",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llava-vr convert",
        description="Convert a LLaVA-NeXT / LLaVA-OneVision (Qwen2) checkpoint into a LLaVA-VR trust_remote_code "
        "folder.",
    )
    parser.add_argument("--source", required=True, help="checkpoint folder, or a Hub id when no such folder exists")
    parser.add_argument("--output", required=True, help="output folder (written atomically)")
    parser.add_argument("--projector-type", choices=list(PROJECTORS), default="adaptive_avg_pool")
    add_vision_remember_flags(parser)
    add_image_processor_flags(parser)
    parser.add_argument(
        "--dtype", choices=["auto", *DTYPES], default="auto", help="weights dtype of the output (default: the source's)"
    )
    parser.add_argument("--tokenizer", help="take the tokenizer from this folder instead of the source")
    parser.add_argument(
        "--vision-num-attention-heads",
        type=int,
        help="lmms-lab sources: the tower's heads, when its name is not in the known table",
    )
    parser.add_argument(
        "--base-model",
        metavar="OWNER/NAME",
        help="the source's Hub id for the card's base_model (default: found when SRC is a Hub id)",
    )
    parser.add_argument("--license", help="license for the model card (default: the source card's, else apache-2.0)")
    parser.add_argument("--datasets", nargs="+", help="datasets for the model card (default: the source card's)")
    parser.add_argument("--push-to-hub", metavar="OWNER/NAME", help="upload the converted folder to this repo")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    parser.add_argument(
        "--dry-run", action="store_true", help="with --push-to-hub: list what would upload, upload nothing"
    )
    parser.add_argument("--commit-message", default=None, help="with --push-to-hub")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output folder")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.private or args.dry_run) and not args.push_to_hub:
        parser.error("--private / --dry-run need --push-to-hub")
    for flag, value in (("--push-to-hub", args.push_to_hub), ("--base-model", args.base_model)):
        if value and not is_hub_id(value):
            parser.error(f"{flag} {value!r}: expected a Hub id OWNER/NAME")
    if (args.image_mean is None) != (args.image_std is None):
        parser.error("--image-mean and --image-std go together")
    if args.assume_clip_normalisation and args.image_mean is not None:
        parser.error("--assume-clip-normalisation and --image-mean/--image-std exclude each other")
    return args
