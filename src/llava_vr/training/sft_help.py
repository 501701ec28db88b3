# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""A torch-free `llava-vr sft --help`, from a stored description of the command's parser.

`llava-vr sft`'s options are TRL's `SFTConfig` and `ModelConfig` plus the project's (`sft_options.py`), parsed by
`TrlParser`: building that parser imports TRL, Transformers and torch (5-10 s). `sft_help.json` stores what argparse
needs to print the same help — each option's strings, `nargs`, `required`, `metavar`, choices and help text with its
default already filled in — for the TRL and Transformers releases it was written with and the option sources it was
written from (their SHA-256). `build_parser()` rebuilds an argparse parser from it, which formats the same help at
any terminal width, or returns `None` where the installed releases or the sources differ: the command then builds
the real parser (slow, always right). `modeling_tests/test_sft_help.py` compares the two; after changing an option,
rewrite the file with `python -m llava_vr.training.sft_help --write`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

STORED = Path(__file__).with_name("sft_help.json")
# the files whose text makes the parser: the options, the stage names, the description (sft_cli's docstring)
SOURCES = ("sft_options.py", "components.py", "sft_cli.py")
RELEASES = ("trl", "transformers")  # the distributions whose dataclasses make the other options


def current_key() -> dict:
    """The installed TRL / Transformers releases and the SHA-256 of `SOURCES`: what the stored help is valid for."""
    releases = {}
    for name in RELEASES:
        try:
            releases[name] = version(name)
        except PackageNotFoundError:
            releases[name] = None
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(Path(__file__).with_name(name).read_bytes())
    return {"releases": releases, "sources_sha256": digest.hexdigest()}


def describe(parser: argparse.ArgumentParser) -> dict:
    """What `parser_from_description` needs to format `parser`'s help: the description and, per option, its strings,
    `nargs`, `required`, `metavar`, choices (as text) and help (defaults filled in, as `formatter_class` shows them)."""
    formatter = parser._get_formatter()
    options = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        help_text = action.help
        if help_text is not None and help_text != argparse.SUPPRESS:
            help_text = formatter._expand_help(action)
        options.append(
            {
                "option_strings": list(action.option_strings),
                "dest": action.dest,
                "nargs": action.nargs,
                "required": action.required,
                "metavar": action.metavar,
                "choices": None if action.choices is None else [str(choice) for choice in action.choices],
                "help": help_text,
            }
        )
    return {"description": parser.description, "epilog": parser.epilog, "options": options}


def parser_from_description(description: dict, prog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser whose `format_help()` equals that of the parser `describe` read (only for help: its
    options take any value)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description["description"],
        epilog=description["epilog"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for option in description["options"]:
        help_text = option["help"]
        if help_text is not None and help_text != argparse.SUPPRESS:
            help_text = help_text.replace("%", "%%")  # already expanded
        kwargs = dict(dest=option["dest"], required=option["required"], help=help_text, metavar=option["metavar"])
        if option["choices"] is not None:
            kwargs["choices"] = option["choices"]
        if option["nargs"] == 0:
            kwargs.update(action="store_const", const=None)
        else:
            kwargs["nargs"] = option["nargs"]
        parser.add_argument(*option["option_strings"], **kwargs)
    return parser


def build_parser(prog: str | None = None) -> argparse.ArgumentParser | None:
    """The stored `llava-vr sft` help as a parser, or `None` where it is not valid for what is installed."""
    prog = prog or "llava-vr sft"
    try:
        stored = json.loads(STORED.read_text())
    except (OSError, ValueError):
        return None
    if stored.get("key") != current_key():
        return None
    return parser_from_description(stored["parser"], prog)


def live_parser(prog: str = "llava-vr sft") -> argparse.ArgumentParser:
    """The command's real parser (imports TRL, Transformers and torch)."""
    from . import sft_cli
    from .sft_options import build_parser as build_sft_parser

    return build_sft_parser(prog, description=sft_cli.__doc__)


def write() -> Path:
    """Stores the description of the real parser with the key of what is installed."""
    stored = {"key": current_key(), "parser": describe(live_parser())}
    STORED.write_text(json.dumps(stored, indent=1, ensure_ascii=False) + "\n")
    return STORED


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python -m llava_vr.training.sft_help --write")
    print(f"wrote {write()}")
