# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""One checkpoint at several token budgets through lmms-eval: one `lmms-eval` run per budget (its own CLI, the budget
as `tokens_per_tile` in `--model_args`), then a table of every task's metrics per budget (Markdown, and JSON with
`--json`). `--results-only` tabulates runs already in `--output-dir` (one subfolder per budget).

    python -m llava_vr.evaluation.compare_budgets --pretrained CKPT --budgets 144 64 36 \\
        --tasks docvqa_val,chartqa --output-dir runs/budgets -- --batch_size 8 --limit 500
    # anything after `--` goes to lmms-eval unchanged
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def run_budget(args, budget: int | None, extra: list[str]) -> float:
    """Runs lmms-eval's CLI for one budget (`None`: the checkpoint's own) into `<output-dir>/tokens<budget>`;
    returns its wall seconds."""
    model_args = f"pretrained={args.pretrained}"
    if budget is not None:
        model_args += f",tokens_per_tile={budget}"
    if args.model_args:
        model_args += f",{args.model_args}"
    command = [sys.executable, "-m", "lmms_eval", "--model", args.model, "--model_args", model_args]
    command += ["--tasks", args.tasks, "--output_path", str(budget_dir(args.output_dir, budget))]
    if args.include_path:
        command += ["--include_path", str(args.include_path)]
    command += extra
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def budget_dir(output_dir: Path, budget: int | None) -> Path:
    return Path(output_dir) / (f"tokens{budget}" if budget is not None else "tokens_default")


def read_scores(folder: Path) -> dict[str, dict[str, float]]:
    """`{task: {metric: value}}` of the newest lmms-eval results file under `folder` (stderr columns dropped)."""
    files = sorted(Path(folder).rglob("*_results.json"), key=lambda path: path.stat().st_mtime)
    if not files:
        raise ValueError(f"no lmms-eval results (*_results.json) under {folder}: did that run fail?")
    results = json.loads(files[-1].read_text())["results"]
    return {
        task: {
            key.split(",")[0]: value
            for key, value in metrics.items()
            if "," in key and "_stderr" not in key and isinstance(value, (int, float))
        }
        for task, metrics in results.items()
    }


def table(scores: dict) -> str:
    """Markdown: one row per (task, metric), one column per budget."""
    budgets = list(scores)
    rows = sorted({(task, metric) for s in scores.values() for task, metrics in s.items() for metric in metrics})
    lines = ["| task | metric | " + " | ".join(f"{b} tokens/tile" for b in budgets) + " |"]
    lines.append("|---|---|" + "---|" * len(budgets))
    for task, metric in rows:
        cells = [scores[b].get(task, {}).get(metric) for b in budgets]
        lines.append(f"| {task} | {metric} | " + " | ".join("-" if c is None else f"{c:.4f}" for c in cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llava-vr eval budgets", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pretrained", help="checkpoint folder or Hub id")
    parser.add_argument("--budgets", nargs="+", type=int, required=True, help="tokens per tile (g*g), e.g. 144 64 36")
    parser.add_argument("--tasks", help="lmms-eval tasks, comma-separated")
    parser.add_argument("--model", default="llava_vr", choices=["llava_vr", "llava_vr_vllm"])
    parser.add_argument("--model-args", default="", help="more --model_args, e.g. image_placement=last")
    parser.add_argument("--include-path", type=Path, help="folder of local tasks (llava-vr eval tasks DIR)")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--results-only", action="store_true", help="run nothing: tabulate --output-dir")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.results_only and not (args.pretrained and args.tasks):
        parser.error("--pretrained and --tasks are needed to run (or --results-only)")
    seconds = {}
    for budget in args.budgets:
        if not args.results_only:
            seconds[budget] = run_budget(args, budget, extra)
    scores = {budget: read_scores(budget_dir(args.output_dir, budget)) for budget in args.budgets}
    if args.json:
        print(json.dumps({"scores": scores, "seconds": seconds}, indent=2))
    else:
        print(table(scores))
        for budget, wall in seconds.items():
            print(f"{budget} tokens/tile: {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = ["budget_dir", "main", "read_scores", "table"]
