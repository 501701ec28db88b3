# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The `llava-vr` command under the package's name. The implementation is the top-level module `llava_vr_cli`, which
the console script imports without importing this package (and so without torch): see its docstring."""

from llava_vr_cli import SUBCOMMANDS, build_parser, main

__all__ = ["SUBCOMMANDS", "build_parser", "main"]
