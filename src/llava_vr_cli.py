# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The `llava-vr` command: one entry point for the project's tools, like `trl sft`.

    llava-vr convert --source SRC --output DIR [...]      convert a LLaVA-NeXT / OneVision checkpoint
    llava-vr push DIR --repo-id OWNER/NAME [--dry-run]    publish a LLaVA-VR folder to the Hub
    llava-vr sft --model_name_or_path CKPT [...]          fine-tune with TRL's SFTTrainer
    llava-vr bench {model,vision-remember,serving} [...]  benchmarks
    llava-vr experiment [...]                             the visual-forgetting experiment

This module lives beside the `llava_vr` package, not in it: importing `llava_vr` registers the model with
Transformers' Auto classes, which imports torch and Transformers (seconds), and `llava-vr --help`, `--version` and a
mistyped command should not wait for that. A subcommand's module is imported only when it runs, and parses the rest
of the command line itself: `llava-vr sft --help` shows TRL's and the project's options. `llava_vr.cli` is this
module under the package's name (`python -m llava_vr` runs it too).
"""

import argparse
import importlib
import sys

# subcommand -> ("module:function", one-line help); the function takes the remaining arguments
SUBCOMMANDS = {
    "convert": ("llava_vr.conversion.convert:main", "convert a LLaVA-NeXT / LLaVA-OneVision checkpoint to LLaVA-VR"),
    "push": ("llava_vr.hub.push:main", "publish a LLaVA-VR folder to the Hub with its model card (or --dry-run)"),
    "sft": ("llava_vr.training.sft_cli:main", "fine-tune with TRL's SFTTrainer (full, staged or LoRA)"),
    "bench": ("llava_vr.benchmarks.cli:main", "benchmarks: whole model (TTFT, decode, memory, FLOPs), VR alone, "
                                              "serving"),
    "experiment": ("llava_vr.experiments.visual_forgetting:main", "the visual-forgetting experiment"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llava-vr",
        description="LLaVA-VR (Vision Remember) tools. `llava-vr COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="store_true", help="print the package version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in SUBCOMMANDS:
        args = parser.parse_args(argv)
        if args.version:
            from importlib.metadata import version

            print(version("llava-vr"))
            return 0
        parser.print_help()
        return 0 if not argv else 2
    target, _ = SUBCOMMANDS[argv[0]]
    module_name, function_name = target.split(":")
    sys.argv = [f"llava-vr {argv[0]}", *argv[1:]]  # subcommand parsers (TrlParser too) print this program name
    result = getattr(importlib.import_module(module_name), function_name)(argv[1:])
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
