# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The command line of `llava-vr push` (torch-free, so `llava-vr push --help` answers at once)."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llava-vr push", description="Publish a LLaVA-VR folder to the Hugging Face Hub."
    )
    parser.add_argument("folder", help="a converted or fine-tuned LLaVA-VR folder")
    parser.add_argument("--repo-id", required=True, help="OWNER/NAME")
    parser.add_argument(
        "--base-model",
        metavar="OWNER/NAME",
        help="the Hub model this one comes from, for the card (default: found in the folder's card)",
    )
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--dry-run", action="store_true", help="list the files and print the card; upload nothing")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


__all__ = ["build_parser", "parse_args"]
