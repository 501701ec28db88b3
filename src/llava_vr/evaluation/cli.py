# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""`llava-vr eval`: evaluation with lmms-eval (0.7, installed beside the package: README "Evaluate").

    llava-vr eval tasks DIR [...]            write the local tasks (synthetic documents, the experiment's digit grids)
    llava-vr eval budgets --pretrained CKPT --budgets 144 64 36 --tasks ... --output-dir OUT [-- LMMS_EVAL_ARGS]
                                             one lmms-eval run per token budget, then a table per budget
    llava-vr eval run LMMS_EVAL_ARGS         lmms-eval's own CLI (the same as `lmms-eval ...`: the models
                                             `llava_vr` and `llava_vr_vllm` are registered by entry point)

This parser is torch-free (`llava_vr_cli.HELP_PARSERS`); each command imports what it needs when it runs.
"""

import argparse
import importlib
import sys

COMMANDS = {
    "tasks": "llava_vr.evaluation.task_builder:main",
    "budgets": "llava_vr.evaluation.compare_budgets:main",
    "run": None,  # lmms-eval's CLI
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llava-vr eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=list(COMMANDS))
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the command's own arguments (its --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        from lmms_eval.__main__ import cli_evaluate

        sys.argv = ["lmms-eval", *args.arguments]
        cli_evaluate()
        return 0
    module_name, function_name = COMMANDS[args.command].split(":")
    return getattr(importlib.import_module(module_name), function_name)(args.arguments)


__all__ = ["COMMANDS", "build_parser", "main"]
