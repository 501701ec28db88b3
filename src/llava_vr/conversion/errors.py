# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The refusal type shared by conversion and publishing, its one-line message, and the Hub-id pattern."""

import re

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
"""`OWNER/NAME`."""

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")
"""Weight formats a published folder must not hold (safetensors only)."""


class ConversionError(ValueError):
    """A refusal (bad input, named with its fix): the commands print its message as one line on stderr and exit with
    status 2."""


def one_line(message) -> str:
    """The informative last line of a (possibly multi-line) error message, without its exception-type prefix."""
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    if not lines:
        return type(message).__name__ if isinstance(message, BaseException) else "unknown error"
    return re.sub(r"^(\w+Error|\w+Exception):\s*", "", lines[-1])


def log(message: str = "") -> None:
    """Progress on stdout, flushed (conversions of large checkpoints take minutes)."""
    print(message, flush=True)
