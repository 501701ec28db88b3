# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""What every `llava-vr` command shares: the one refusal type and the exit-status contract.

    raise LlavaVRRefusal("--output out exists and is not empty (pass --overwrite to replace it)")
    return run_command(lambda: convert_and_push(args), debug=args.debug, catch_errors=True)   # in a command's `main`

A refusal (bad input, named with its fix) is printed as `error: MESSAGE` on stderr and exits with status 2; with
`catch_errors`, any other error is one `error:` line too (status 1) and an interrupt exits 130.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable


class LlavaVRRefusal(ValueError):
    """The command cannot do what was asked; the message names the problem and the fix (one line; a data refusal
    lists its bad lines below it)."""


def listed_refusal(head: str, lines: list[str], max_listed: int, listing_name: str) -> str:
    """A refusal that lists bad records: `head`, then `lines` indented; beyond `max_listed` of them, the first
    `max_listed` and the path of a temporary file `llava-vr-{listing_name}-*.txt` that holds them all."""
    if len(lines) > max_listed:
        handle, listing = tempfile.mkstemp(prefix=f"llava-vr-{listing_name}-", suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        lines = [*lines[:max_listed], f"... and {len(lines) - max_listed} more: all {len(lines)} in {listing}"]
    return "\n".join([head, *("  " + line for line in lines)])


def one_line(message) -> str:
    """The informative last line of a (possibly multi-line) error message, without its exception-type prefix."""
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    if not lines:
        return type(message).__name__ if isinstance(message, BaseException) else "unknown error"
    return re.sub(r"^(\w+Error|\w+Exception):\s*", "", lines[-1])


def log(message: str = "") -> None:
    """Progress on stdout, flushed (conversions of large checkpoints take minutes)."""
    print(message, flush=True)


def report_error(message: str) -> None:
    """`error: MESSAGE` on stderr, from one process only (rank 0 of a distributed launch)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"error: {message}", file=sys.stderr, flush=True)


def run_command(body: Callable[[], object], *, debug: bool = False, catch_errors: bool = False) -> int:
    """Runs a command's `body` and returns its exit status: 0 when done, 2 on a `LlavaVRRefusal` (its message on
    stderr). With `catch_errors`, any other exception is one line too (status 1, `--debug` for the traceback) and an
    interrupt exits 130; without, it propagates. `debug` re-raises everything."""
    try:
        body()
    except LlavaVRRefusal as error:
        if debug:
            raise
        report_error(str(error).strip())
        return 2
    except KeyboardInterrupt:
        if debug or not catch_errors:
            raise
        report_error("interrupted")
        return 130
    except Exception as error:  # a bug or an unexpected file: still one line, --debug for the traceback
        if debug or not catch_errors:
            raise
        report_error(f"{type(error).__name__}: {one_line(error)} (run with --debug for the traceback)")
        return 1
    return 0


__all__ = ["LlavaVRRefusal", "listed_refusal", "log", "one_line", "report_error", "run_command"]
