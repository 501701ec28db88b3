# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The multi-tile visual-forgetting experiment (`multi_tile_options.DESCRIPTION`): runs one after another, each
added to `<output-dir>/results.json` as soon as it finishes (written to a temporary file, then renamed), so an
interrupted command loses only the run in progress and resumes by skipping the runs already there."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.synthetic_documents import generate_samples
from ..hub.refusals import LlavaVRRefusal, run_command
from ..training import set_trainable
from .multi_tile_options import PRESETS, VARIANTS, parse_args
from .multi_tile_results import write_summary
from .multi_tile_task import LAYOUTS, SHADES, build_model_and_processor, build_tokenizer, datasets_for, shaded
from .visual_forgetting_runs import evaluate, frozen_pretrained_tower, train
from .visual_forgetting_task import grid_digits


def preset_of(args) -> dict:
    """The chosen preset, with `--steps` and `--repeat-fraction` applied."""
    preset = dict(PRESETS[args.preset])
    if args.steps:
        preset["steps"] = args.steps
    if args.repeat_fraction is not None:
        if not 0 <= args.repeat_fraction <= 1:
            raise LlavaVRRefusal(f"--repeat-fraction {args.repeat_fraction} must be in [0, 1]")
        preset["repeat_fraction"] = args.repeat_fraction
    return preset


def load_results(output_dir: Path) -> dict:
    """`results.json` of `output_dir` (`{"runs": [...]}`), empty when there is none yet."""
    path = output_dir / "results.json"
    return json.loads(path.read_text()) if path.is_file() else dict(runs=[])


def save_results(output_dir: Path, results: dict) -> None:
    """Writes `results.json` atomically (temporary file, then rename): a killed process leaves the old file whole."""
    path = output_dir / "results.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results, indent=2))
    os.replace(temporary, path)


def same_preset(row: dict, preset: dict) -> bool:
    return row.get("preset") == json.loads(json.dumps(preset))


def image_tokens(model, tile: int, layouts) -> dict[str, int]:
    """Image tokens of an image of each layout (base tile, crops and the `image_newline`s)."""
    sizes = torch.tensor([[LAYOUTS[name][0] * tile, LAYOUTS[name][1] * tile] for name in layouts])
    return dict(zip(layouts, (layout.num_tokens for layout in model.model.image_layouts(sizes)), strict=True))


def pretrain_shaded_tower(model, processor, preset: dict, seed: int, steps: int = 400, batch: int = 64):
    """`visual_forgetting_runs.pretrain_tower` for tiles of `SHADES` backgrounds: three linear heads on the tower's
    last hidden state learn each patch's digit, its position in the tile and the tile's shade (which tile it is) on
    single training-split tiles of random shade. Returns the held-out per-patch (digit, position, shade) accuracies."""
    tower, grid = model.model.vision_tower, preset["grid"]
    positions = torch.arange(grid * grid)

    def batch_of(count: int, split: str):
        """Pixel values `(count, 3, tile, tile)`, digits `(count, grid**2)` and shade indices `(count,)`."""
        samples = generate_samples(
            count, seed + 7919, split, kinds=("digit_grid",), size=preset["tile"], grid=grid, question="all"
        )
        shades = torch.randint(len(SHADES), (count,), generator=torch.Generator().manual_seed(seed + len(split)))
        images = [shaded(s.image, SHADES[k]) for s, k in zip(samples, shades.tolist(), strict=True)]
        pixels = torch.cat(
            [
                processor.image_processor(images[i : i + 256], return_tensors="pt")["pixel_values"][:, 0].clone()
                for i in range(0, count, 256)
            ]
        )
        return pixels, torch.tensor([[int(d) for d in grid_digits(s.answer)] for s in samples]), shades

    generator = torch.Generator().manual_seed(seed)
    heads = torch.nn.ModuleList([torch.nn.Linear(tower.config.hidden_size, n) for n in (10, grid * grid, len(SHADES))])
    optimizer = torch.optim.AdamW([*tower.parameters(), *heads.parameters()], lr=3e-3)
    train_pixels, train_digits, train_shades = batch_of(steps * batch // 4, "train")
    tower.train()
    for _ in tqdm(range(steps), desc="tower pretraining", unit="step", mininterval=30):
        index = torch.randint(len(train_digits), (batch,), generator=generator)
        features = tower(pixel_values=train_pixels[index]).last_hidden_state[:, 1:]
        targets = (train_digits[index], positions.expand(batch, -1), train_shades[index, None].expand(-1, grid * grid))
        loss = sum(
            torch.nn.functional.cross_entropy(head(features).flatten(0, 1), target.flatten())
            for head, target in zip(heads, targets, strict=True)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tower.eval()
    with torch.no_grad():
        pixels, digits, shades = batch_of(preset.get("tower_eval", 256), "validation")
        features = tower(pixel_values=pixels).last_hidden_state[:, 1:]
        targets = (digits, positions.expand(len(digits), -1), shades[:, None].expand(-1, grid * grid))
        return tuple(
            float((head(features).argmax(-1) == t).float().mean()) for head, t in zip(heads, targets, strict=True)
        )


def cached_frozen_tower(model, processor, tower_preset: dict, seed: int, output_dir: Path):
    """`frozen_pretrained_tower`, pretrained once per seed and tower preset: the tower's weights and accuracies are
    kept in `<output-dir>/towers/` and loaded by the seed's later runs, so every variant of a seed reads the very same
    frozen tower (and the pretraining's CPU time is spent once). Returns the (digit, position[, shade]) accuracies."""
    key = f"seed{seed}-" + "-".join(f"{k}{v}" for k, v in sorted(tower_preset.items())).replace(" ", "")
    path = output_dir / "towers" / f"{key}.pt"
    tower = model.model.vision_tower
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        tower.load_state_dict(saved["state_dict"])
        tower.eval()
        set_trainable(model, ["projector", "vision_remember", "llm", "lm_head"])
        return tuple(saved["accuracy"])
    if tower_preset.get("shade"):
        torch.manual_seed(seed)
        accuracy = pretrain_shaded_tower(model, processor, tower_preset, seed, steps=tower_preset["tower_steps"])
        print(f"pretrained tower, held-out per-patch accuracy (digit, position, shade): {accuracy}", flush=True)
        set_trainable(model, ["projector", "vision_remember", "llm", "lm_head"])
    else:
        accuracy = frozen_pretrained_tower(model, processor, tower_preset, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state_dict=tower.state_dict(), accuracy=list(accuracy)), path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)
    return accuracy


def run_one(variant: str, seed: int, preset: dict, tokenizer, args) -> dict:
    """Trains and evaluates one variant on one seed; returns its row for `results.json`."""
    question_first = VARIANTS[variant][1]
    train_set, test_set, dropped = datasets_for(preset, seed, args.test_samples, question_first)
    random.seed(seed)
    model, processor = build_model_and_processor(variant, preset, tokenizer, seed)
    tower_preset = dict(
        image=preset["tile"],
        grid=preset["grid"],
        question="all_labelled",
        pretrained_tower=True,
        tower_eval=preset.get("tower_eval", 256),
    )
    if preset.get("shade"):
        tower_preset.update(shade=True, tile=preset["tile"])
    tower_preset["tower_steps"] = preset.get("tower_steps", 400)
    tower_accuracy = cached_frozen_tower(model, processor, tower_preset, seed, args.output_dir)
    folder = args.output_dir / f"{variant}-seed{seed}-trainer"
    runtime, losses = train(model, processor, train_set, preset, seed, folder, args.learning_rate)
    shutil.rmtree(folder, ignore_errors=True)
    accuracy, digit_accuracy, prefill = evaluate(model, processor, test_set)
    return dict(
        variant=variant,
        seed=seed,
        question_first=question_first,
        accuracy=accuracy,
        digit_accuracy=round(digit_accuracy, 4),
        image_tokens=image_tokens(model, preset["tile"], preset["layouts"]),
        tower_patch_accuracy=dict(zip(("digit", "position", "shade"), tower_accuracy, strict=False)),
        train_seconds=round(runtime, 1),
        threads=torch.get_num_threads(),
        prefill_seconds_per_batch=round(prefill, 4),
        first_loss=losses[0] if losses else math.nan,
        last_loss=losses[-1] if losses else math.nan,
        losses=losses,
        steps=preset["steps"],
        learning_rate=args.learning_rate,
        test_samples=len(test_set),
        test_images_dropped_as_training_images=dropped,
        preset=preset,
    )


def run(args) -> dict:
    """Every (seed, variant) not yet in `results.json`, seed by seed in `--variants` order; then the summary."""
    preset = preset_of(args)
    torch.set_num_threads(args.threads)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if not args.summarize_only:
        tokenizer = build_tokenizer()
        for seed in args.seeds:
            for variant in args.variants:
                results = load_results(args.output_dir)
                done = {(r["variant"], r["seed"]) for r in results["runs"] if same_preset(r, preset)}
                if (variant, seed) in done:
                    print(f"{variant} seed {seed}: already in results.json, skipped", flush=True)
                    continue
                print(f"{variant} seed {seed}: training ({preset['steps']} steps)", flush=True)
                begin = time.monotonic()
                row = run_one(variant, seed, preset, tokenizer, args)
                row["wall_seconds"] = round(time.monotonic() - begin, 1)
                results = load_results(args.output_dir)  # re-read: another process may have added runs
                results["runs"].append(row)
                save_results(args.output_dir, results)
                print(json.dumps({k: v for k, v in row.items() if k not in ("losses", "preset")}), flush=True)
                write_summary(args.output_dir, preset)
    results = load_results(args.output_dir)
    if not any(same_preset(r, preset) for r in results["runs"]):
        raise LlavaVRRefusal(f"no finished run of preset {args.preset!r} in {args.output_dir}")
    print(write_summary(args.output_dir, preset))
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["load_results", "main", "run", "run_one", "save_results"]
