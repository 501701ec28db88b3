# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""`llava-vr experiment`: the visual-forgetting experiment (what it measures, its protocol and commands:
`visual_forgetting_options.DESCRIPTION`, which its `--help` prints)."""

from __future__ import annotations

import math
import multiprocessing
import os
import time
import traceback
from pathlib import Path

import torch

from ..hub.refusals import LlavaVRRefusal, run_command
from .visual_forgetting_options import PRESETS, RUN_SECONDS, parse_args
from .visual_forgetting_results import collect, save_best, write_summary
from .visual_forgetting_runs import run_dir, run_one
from .visual_forgetting_task import build_tokenizer, datasets_for


def preset_of(args) -> dict:
    """The chosen preset, with `--steps` applied."""
    preset = dict(PRESETS[args.preset])
    if args.steps:
        preset["steps"] = args.steps
    return preset


def refuse_to_overwrite(args) -> None:
    """Refuses (`LlavaVRRefusal`, before anything trains) when the command would replace something without
    `--overwrite`: a non-empty `--save-best-to` / `--save-samples-to` folder, or a finished run it would train again."""
    if args.overwrite:
        return
    for option, folder in (("--save-best-to", args.save_best_to), ("--save-samples-to", args.save_samples_to)):
        if folder is not None and folder.is_dir() and any(folder.iterdir()):
            names = sorted(p.name for p in folder.iterdir())
            listing = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            raise LlavaVRRefusal(
                f"{option} {folder} is not empty ({listing}): the experiment would replace it. "
                "Pass --overwrite to replace it, or name a new folder."
            )
    if args.summarize_only:
        return
    finished = [run_dir(args.output_dir, v, seed) for seed in args.seeds for v in args.variants]
    finished = [folder for folder in finished if (folder / "result.json").is_file()]
    if finished:
        raise LlavaVRRefusal(
            f"{args.output_dir} already holds finished runs that this command would train again: "
            f"{', '.join(f.name for f in finished)}. Pass --overwrite to replace them, --output-dir "
            "for a new folder, or --summarize-only to summarise what is there."
        )


def print_plan(args, preset: dict) -> None:
    """What the command will do and about how long it takes (from the preset's measured seconds per run)."""
    if args.summarize_only:
        print(f"summarising the finished {args.preset!r} runs in {args.output_dir}", flush=True)
        return
    runs = len(args.variants) * len(args.seeds)
    setup_seconds, step_seconds = RUN_SECONDS[args.preset]
    minutes = (setup_seconds + step_seconds * preset["steps"]) / 60
    total = math.ceil(runs / args.jobs) * minutes
    print(
        f"plan: {runs} runs ({', '.join(args.variants)} x seeds {', '.join(map(str, args.seeds))}), preset "
        f"{args.preset!r}: {preset['steps']} steps of batch {preset['batch']} each, {args.jobs} at a time with "
        f"{args.threads} thread(s) each; about {minutes:.1f} min per run on one core of the reference 2-core CPU, "
        f"so about {total:.0f} min in all; results in {args.output_dir}",
        flush=True,
    )


def run_seeds(args, seeds: list[int], variants: list[str]) -> None:
    """Every (seed, variant) in this process: one tokenizer, one dataset pair per seed."""
    preset, tokenizer = preset_of(args), build_tokenizer()
    for seed in seeds:
        print(
            f"seed {seed}: rendering {preset['train']} training and {args.test_samples} held-out test images",
            flush=True,
        )
        data = datasets_for(preset, seed, args.test_samples)
        for variant in variants:
            run_one(variant, seed, preset, tokenizer, data, args)


def run_logged(task: tuple) -> tuple[str, int, Path, bool]:
    """One run `(args, variant, seed, log_path)` in a worker process, its stdout and stderr (file descriptors 1 and 2)
    sent to `log_path`; returns `(variant, seed, log_path, succeeded)` (a failure's traceback is in the log)."""
    args, variant, seed, log_path = task
    with open(log_path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        torch.set_num_threads(args.threads)
        try:
            run_seeds(args, [seed], [variant])
        except Exception:
            traceback.print_exc()
            return variant, seed, log_path, False
    return variant, seed, log_path, True


def run_in_processes(args, pairs: list[tuple[str, int]]) -> None:
    """One fresh process per (variant, seed) (`spawn`, one task per process), at most `--jobs` at a time, `--threads`
    torch threads each; each run's output goes to `<output-dir>/<variant>-seed<seed>.log`."""
    tasks = [(args, v, seed, run_dir(args.output_dir, v, seed).with_suffix(".log")) for v, seed in pairs]
    for _, variant, seed, log_path in tasks:
        print(f"queued {variant} seed {seed} (log: {log_path})", flush=True)
    failed, start = [], time.monotonic()
    with multiprocessing.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
        for done, (variant, seed, log_path, succeeded) in enumerate(pool.imap_unordered(run_logged, tasks), 1):
            print(
                f"finished {variant} seed {seed}: {'ok' if succeeded else 'failed'} ({done} of {len(tasks)} runs "
                f"done, {(time.monotonic() - start) / 60:.1f} min so far)",
                flush=True,
            )
            if not succeeded:
                failed.append(f"{variant} seed {seed} (see {log_path})")
    if failed:
        raise SystemExit("runs failed: " + ", ".join(failed))


def run(args) -> list[dict]:
    """Trains what `args` asks (unless `--summarize-only`), then summarises every finished run of the preset in the
    folder (`results.json`, `results.md`) and saves the best model if asked; returns the runs."""
    preset = preset_of(args)
    refuse_to_overwrite(args)
    print_plan(args, preset)
    torch.set_num_threads(args.threads)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if not args.summarize_only and args.jobs > 1:
        run_in_processes(args, [(variant, seed) for seed in args.seeds for variant in args.variants])
    elif not args.summarize_only:
        run_seeds(args, args.seeds, args.variants)
    results = collect(args.output_dir, preset)
    if not results:
        raise LlavaVRRefusal(f"no finished run of preset {args.preset!r} in {args.output_dir}")
    print(write_summary(args.output_dir, preset, results))
    if args.save_best_to:
        save_best(results, args, preset)
    return results


def main(argv: list[str] | None = None) -> int:
    """`llava-vr experiment ...`: exit status 0; 2 on a refusal (one `error:` line on stderr, nothing trained); failed
    runs exit through `SystemExit` with their message (status 1)."""
    args = parse_args(argv)
    return run_command(lambda: run(args))


__all__ = ["main", "parse_args", "print_plan", "refuse_to_overwrite", "run", "run_in_processes"]
