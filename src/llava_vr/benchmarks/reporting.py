# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Result files and printed tables: JSON (everything, with a `meta` block), CSV (one flat row per case), Markdown
tables, PNG figures (matplotlib: the `bench` extra; without it a benchmark says so up front, then writes the rest)."""

import csv
import json
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from .machine import dtype_name, machine_info

# relative to the working directory; git-ignored in the checkout, so a run never rewrites the tracked reference results
# (`benchmarks/reference_results/`: only when given as `--output-dir`)
DEFAULT_OUTPUT_DIR = Path("benchmark_results")
MATPLOTLIB_MISSING = 'matplotlib is not installed: no plot (pip install -e ".[bench]" adds it)'


def utc_timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def command_line(prog: str, argv: list[str] | None) -> str:
    """The command as run: `prog` and the arguments (`sys.argv[1:]` when `argv` is None)."""
    return prog + " " + " ".join(sys.argv[1:] if argv is None else argv)


def result_meta(
    benchmark: str, preset: str, dtype: torch.dtype, device: torch.device, threads: int, command: str, /, **fields
) -> dict:
    """What every result file records: the benchmark, preset, dtype, `fields`, time, command and `machine_info`."""
    return {
        "benchmark": benchmark,
        "preset": preset,
        "dtype": dtype_name(dtype),
        **fields,
        "timestamp": utc_timestamp(),
        "command": command,
        "machine": machine_info(device, threads),
    }


def write_json(path: Path, payload: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def write_csv(path: Path, rows: list[dict]):
    """One line per row; the columns are every scalar key in first-seen order (dicts and lists stay in the JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys and not isinstance(row[k], (dict, list))]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items() if k in keys})


def write_results(
    out_dir: Path,
    stem: str,
    payload: dict,
    rows: list[dict],
    plot: Callable[[Path], None] | None = None,
    no_plot: str | None = None,
):
    """Writes `<stem>.json` (`payload`) and `<stem>.csv` (`rows`) to `out_dir`, and `<stem>.png` with `plot(path)`
    unless there is none, matplotlib is missing or `no_plot` says why not; prints what it wrote."""
    base = Path(out_dir) / stem
    write_json(Path(f"{base}.json"), payload)
    write_csv(Path(f"{base}.csv"), rows)
    if plot is not None and no_plot is None and not plotting_available():
        no_plot = MATPLOTLIB_MISSING
    if plot is not None and no_plot is None:
        plot(Path(f"{base}.png"))
    note = f" ({no_plot})" if no_plot == MATPLOTLIB_MISSING else f" (no plot: {no_plot})" if no_plot else ""
    print(f"\nwrote {base}.json, .csv" + (note or (", .png" if plot else "")))


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table; `None` cells print as `-`, floats with 3 significant digits (1 decimal from 10 up)."""

    def cell(value):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value, spec: str, suffix: str = "") -> str:
    """`value` formatted with `spec` (+ `suffix`), `-` for `None`."""
    return "-" if value is None else f"{value:{spec}}{suffix}"


def plotting_available(say_so: bool = False) -> bool:
    """Whether matplotlib (the `bench` extra) imports; with `say_so`, prints `MATPLOTLIB_MISSING` when it does not."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if say_so:
            print(f"  {MATPLOTLIB_MISSING}", flush=True)
        return False
    return True


def pyplot():
    """`matplotlib.pyplot` on the non-interactive Agg backend (matplotlib: the `bench` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path):
    """Lays out, writes (110 dpi) and closes `fig`."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


__all__ = [
    "DEFAULT_OUTPUT_DIR",
    "MATPLOTLIB_MISSING",
    "command_line",
    "fmt",
    "markdown_table",
    "plotting_available",
    "pyplot",
    "result_meta",
    "save_figure",
    "utc_timestamp",
    "write_csv",
    "write_json",
    "write_results",
]
