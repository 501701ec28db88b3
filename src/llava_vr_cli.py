# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The `llava-vr` command: one entry point for the project's tools, like `trl sft` (`python -m llava_vr` is the same).

    llava-vr convert --source SRC --output DIR [...]      convert a LLaVA-NeXT / OneVision checkpoint
    llava-vr push DIR --repo-id OWNER/NAME [--dry-run]    publish a LLaVA-VR folder to the Hub
    llava-vr sft --model_name_or_path CKPT [...]          fine-tune with TRL's SFTTrainer
    llava-vr bench {model,vision-remember,decode,serving} [...]  benchmarks
    llava-vr experiment [...]                             the visual-forgetting experiment
    llava-vr eval {tasks,budgets,run} [...]               evaluate with lmms-eval (local tasks, token budgets)

This module lives beside the `llava_vr` package, not in it: importing `llava_vr` registers the model with
Transformers' Auto classes, which imports torch and Transformers (seconds), and `llava-vr --help`, `--version` and a
mistyped command should not wait for that. A subcommand's module is imported only when it runs, and parses the rest
of the command line itself: `llava-vr sft --help` shows TRL's and the project's options. A subcommand whose parser
is torch-free (`HELP_PARSERS`) answers `--help` from that parser alone, without the package's `__init__`s.
"""

import argparse
import importlib
import importlib.machinery
import logging
import sys

# subcommand -> ("module:function", one-line help); the function takes the remaining arguments
SUBCOMMANDS = {
    "convert": ("llava_vr.conversion.convert:main", "convert a LLaVA-NeXT / LLaVA-OneVision checkpoint to LLaVA-VR"),
    "push": ("llava_vr.hub.push:main", "publish a LLaVA-VR folder to the Hub with its model card (or --dry-run)"),
    "sft": ("llava_vr.training.sft_cli:main", "fine-tune with TRL's SFTTrainer (full, staged or LoRA)"),
    "bench": (
        "llava_vr.benchmarks.cli:main",
        "benchmarks: whole model (TTFT, decode, memory, FLOPs), VR alone, serving",
    ),
    "experiment": ("llava_vr.experiments.visual_forgetting:main", "the visual-forgetting experiment"),
    "eval": ("llava_vr.evaluation.cli:main", "evaluate with lmms-eval: local tasks, token budgets, lmms-eval's CLI"),
}
# subcommand -> "module:function" building its argparse parser from torch-free modules, for a fast `--help` (or
# returning None where it cannot: the command's own parsing answers then)
HELP_PARSERS = {
    "convert": "llava_vr.conversion.options:build_parser",
    "push": "llava_vr.hub.push_options:build_parser",
    "experiment": "llava_vr.experiments.visual_forgetting_options:build_parser",
    "eval": "llava_vr.evaluation.cli:build_parser",
    "sft": "llava_vr.training.sft_help:build_parser",  # None where its stored help does not fit what is installed
    "bench": "llava_vr.benchmarks.cli:build_parser",  # the list of benchmarks; `bench NAME --help` is the slow path
}


# Notices that releases this project installs print on import and that no user can act on, as (logger, start of the
# message): torchao 0.18 (the `quant` extra, which Transformers imports when installed) tries to load its CUDA-only
# kernels (`_C_mxfp8`, `_C_cutlass_90a`) into a CPU torch, and its `register_constant` calls make torch 2.13 warn
# that Enum subclasses no longer need it. Everything else from these loggers is kept.
KNOWN_IMPORT_NOTICES = (
    ("torchao", "Failed to load "),
    ("torch.utils._pytree", "<enum "),
)


class DropKnownImportNotices(logging.Filter):
    """Drops the records of `KNOWN_IMPORT_NOTICES` from the logger it is added to."""

    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def drop_known_import_notices() -> None:
    """Adds `DropKnownImportNotices` to each logger of `KNOWN_IMPORT_NOTICES` (before torch is imported; once)."""
    by_logger: dict[str, tuple[str, ...]] = {}
    for name, prefix in KNOWN_IMPORT_NOTICES:
        by_logger[name] = (*by_logger.get(name, ()), prefix)
    for name, prefixes in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropKnownImportNotices) for f in logger.filters):
            logger.addFilter(DropKnownImportNotices(prefixes))


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


class PackagesWithoutInit:
    """Imports `llava_vr` and its subpackages as bare namespaces (their `__init__.py` not run), so that one torch-free
    module of the package imports without the Auto-class registration that pulls in torch. Modules import normally.
    A meta path finder and the loader of the packages it finds."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] != "llava_vr":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.submodule_search_locations is None:
            return None
        bare = importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        bare.submodule_search_locations = spec.submodule_search_locations
        return bare

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        pass


def print_help_without_torch(command: str, argv: list[str]) -> None:
    """Parses `argv` with `command`'s torch-free parser (`--help` prints it and exits). Returns, the bare packages
    removed from `sys.modules` again, where there is no such parser (it does not import so, or its builder returns
    `None`) or `--help` was not its own (`bench NAME --help`): the caller then imports the command as usual. Used only
    where `llava_vr` is not imported yet."""
    module_name, function_name = HELP_PARSERS[command].split(":")
    finder = PackagesWithoutInit()
    sys.meta_path.insert(0, finder)
    try:
        parser = getattr(importlib.import_module(module_name), function_name)()
    except ImportError:  # the parser's module needs a package's __init__ after all: the slow path answers
        return
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n.split(".")[0] == "llava_vr"]:
            del sys.modules[name]
    if parser is not None:
        parser.parse_known_args(argv)  # prints the help and exits, unless `--help` belongs to what follows


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
    command = argv[0]
    drop_known_import_notices()
    if command in HELP_PARSERS and {"-h", "--help"} & set(argv[1:]) and "llava_vr" not in sys.modules:
        print_help_without_torch(command, argv[1:])  # exits: usage, or a usage error as the full parse would give
    module_name, function_name = SUBCOMMANDS[command][0].split(":")
    sys.argv = [f"llava-vr {command}", *argv[1:]]  # subcommand parsers (TrlParser too) print this program name
    result = getattr(importlib.import_module(module_name), function_name)(argv[1:])
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
