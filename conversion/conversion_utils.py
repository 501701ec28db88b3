# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Shared by the conversion and publishing scripts: the refusal type and its one-line message."""

import re

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")


class ConversionError(Exception):
    """A refusal: the scripts print its message as one line on stderr and exit with status 2."""


def one_line(message) -> str:
    """The informative last line of a (possibly multi-line) error message, without its exception-type prefix."""
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    if not lines:
        return type(message).__name__ if isinstance(message, BaseException) else "unknown error"
    return re.sub(r"^(\w+Error|\w+Exception):\s*", "", lines[-1])
