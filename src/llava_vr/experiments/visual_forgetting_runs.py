# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""One run of the visual-forgetting experiment: pretrain and freeze the tower, train the rest with TRL's
`SFTTrainer`, evaluate exact match on the held-out grids, write `<output-dir>/<variant>-seed<seed>/result.json`."""

from __future__ import annotations

import json
import math
import random
import shutil
import statistics
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from llava_vr.data.synthetic_documents import generate_samples
from llava_vr.training import set_trainable

from .visual_forgetting_task import PATCH, build_model_and_processor, grid_digits, grid_task


def pretrain_tower(model, processor, preset: dict, seed: int, steps: int = 400, batch: int = 64):
    """The experiment's stand-in for a pretrained CLIP, which is then frozen in every variant as CLIP is in LLaVA.

    Two linear heads on the tower's last hidden state learn, on training-split images, the digit under each patch
    and the patch's position in the grid: like a real CLIP's patch features, these then say what is where. (Trained
    for the digits alone, the features keep next to no position signal, and nothing that re-reads them could tell
    the four digits under one pooled token apart.) Returns the held-out per-patch digit and position accuracies.
    """
    tower = model.model.vision_tower
    grid, patches = preset["grid"], preset["image"] // PATCH
    if grid != patches:
        raise ValueError(f"tower pretraining needs one digit per patch: grid {grid} != {patches} patches per side")
    kwargs = grid_task(preset)
    positions = torch.arange(grid * grid)

    def batch_of(samples, chunk: int = 256):
        """Pixel values `(len(samples), 3, image, image)` (the base tile) and the digits `(len(samples), grid**2)`."""
        pixels = [
            processor.image_processor([s.image for s in samples[i : i + chunk]], return_tensors="pt")["pixel_values"][
                :, 0
            ].clone()
            for i in range(0, len(samples), chunk)
        ]
        labels = torch.tensor([[int(d) for d in grid_digits(s.answer)] for s in samples])
        return torch.cat(pixels), labels

    generator = torch.Generator().manual_seed(seed)
    digit_head = torch.nn.Linear(tower.config.hidden_size, 10)
    position_head = torch.nn.Linear(tower.config.hidden_size, grid * grid)
    heads = [*digit_head.parameters(), *position_head.parameters()]
    optimizer = torch.optim.AdamW([*tower.parameters(), *heads], lr=3e-3)
    # every image through the image processor once (each is drawn about 4 times below)
    train_pixels, train_labels = batch_of(generate_samples(steps * batch // 4, seed + 7919, "train", **kwargs))
    tower.train()
    for _ in tqdm(range(steps), desc="tower pretraining", unit="step"):
        index = torch.randint(len(train_labels), (batch,), generator=generator)
        pixels, labels = train_pixels[index], train_labels[index]
        features = tower(pixel_values=pixels).last_hidden_state[:, 1:]
        loss = torch.nn.functional.cross_entropy(digit_head(features).flatten(0, 1), labels.flatten())
        loss = loss + torch.nn.functional.cross_entropy(
            position_head(features).flatten(0, 1), positions.repeat(len(index))
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tower.eval()
    with torch.no_grad():
        pixels, labels = batch_of(generate_samples(preset.get("tower_eval", 256), seed + 7919, "validation", **kwargs))
        features = tower(pixel_values=pixels).last_hidden_state[:, 1:]
        digits = (digit_head(features).argmax(-1) == labels).float().mean()
        where = (position_head(features).argmax(-1) == positions).float().mean()
    return float(digits), float(where)


def train(model, processor, dataset, preset: dict, seed: int, output_dir: Path, learning_rate: float):
    """`preset["steps"]` steps of TRL's `SFTTrainer` (loss on the reply only, cosine, 5 % warmup); returns the
    training seconds and the logged losses."""
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(output_dir),
        max_steps=preset["steps"],
        per_device_train_batch_size=preset["batch"],
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=preset["steps"] // 20,  # none below 20 steps: a 1-step smoke run trains (warmup starts at 0)
        weight_decay=0.0,
        assistant_only_loss=True,
        max_length=None,
        logging_steps=max(1, preset["steps"] // 15),
        save_strategy="no",
        report_to=[],
        seed=seed,
        dataloader_num_workers=0,
        activation_checkpointing=True,  # as TRL's default (its deprecated `gradient_checkpointing=True`) had it
        disable_tqdm=False,
        bf16=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
    result = trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return result.metrics["train_runtime"], losses


@torch.inference_mode()
def evaluate(model, processor, dataset, batch_size: int = 64):
    """Exact-match accuracy of greedy answers, per-character (digit) accuracy, and the median prefill time per batch."""
    model.eval()
    processor.tokenizer.padding_side = "left"
    correct, chars, char_total, prefill_times = 0, 0, 0, []
    for start in tqdm(range(0, len(dataset), batch_size), desc="evaluation", unit="batch"):
        rows = dataset[start : start + batch_size]
        prompts = [processor.apply_chat_template(m[:1], add_generation_prompt=True) for m in rows["messages"]]
        answers = [m[1]["content"][0]["text"] for m in rows["messages"]]
        inputs = processor(images=[i[0] for i in rows["images"]], text=prompts, return_tensors="pt", padding=True)
        begin = time.perf_counter()
        model(**inputs)
        prefill_times.append(time.perf_counter() - begin)
        generated = model.generate(**inputs, max_new_tokens=40, do_sample=False)
        texts = processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += sum(t.strip() == a for t, a in zip(texts, answers, strict=False))
        chars += sum(
            sum(x == y for x, y in zip(grid_digits(t), grid_digits(a), strict=False))
            for t, a in zip(texts, answers, strict=False)
        )
        char_total += sum(len(grid_digits(a)) for a in answers)
    return correct / len(dataset), chars / char_total, statistics.median(prefill_times)


def run_dir(output_dir: Path, variant: str, seed: int) -> Path:
    """`<output_dir>/<variant>-seed<seed>`: one run's folder."""
    return output_dir / f"{variant}-seed{seed}"


def frozen_pretrained_tower(model, processor, preset: dict, seed: int):
    """With `preset["pretrained_tower"]`: pretrains the tower (`pretrain_tower`), then freezes it; returns its
    held-out (digit, position) accuracies, or `None` without pretraining."""
    if not preset.get("pretrained_tower"):
        return None
    torch.manual_seed(seed)
    accuracy = pretrain_tower(model, processor, preset, seed, steps=preset.get("tower_steps", 400))
    print(
        f"pretrained tower, held-out per-patch accuracy: digit {accuracy[0]:.3f}, position {accuracy[1]:.3f}",
        flush=True,
    )
    set_trainable(model, ["projector", "vision_remember", "llm", "lm_head"])
    return accuracy


def run_one(variant: str, seed: int, preset: dict, tokenizer, datasets, args) -> dict:
    """Trains and evaluates one variant; writes `result.json` (and the model for Vision Remember variants)."""
    train_set, test_set = datasets
    folder = run_dir(args.output_dir, variant, seed)
    shutil.rmtree(folder, ignore_errors=True)  # an unfinished run, or `--overwrite` (`refuse_to_overwrite`)
    random.seed(seed)
    model, processor = build_model_and_processor(variant, preset, tokenizer, seed)
    tower_accuracy = frozen_pretrained_tower(model, processor, preset, seed)  # (digit, position)
    runtime, losses = train(model, processor, train_set, preset, seed, folder / "trainer", args.learning_rate)
    accuracy, digit_accuracy, prefill = evaluate(model, processor, test_set)
    row = dict(
        variant=variant,
        seed=seed,
        accuracy=accuracy,
        digit_accuracy=round(digit_accuracy, 4),
        tower_patch_accuracy=tower_accuracy and dict(digit=tower_accuracy[0], position=tower_accuracy[1]),
        train_seconds=round(runtime, 1),
        threads=torch.get_num_threads(),
        image_tokens=model.model.image_layouts(torch.tensor([[preset["image"]] * 2]))[0].num_tokens,
        prefill_seconds_per_batch=round(prefill, 4),
        first_loss=losses[0] if losses else math.nan,
        last_loss=losses[-1] if losses else math.nan,
        losses=losses,
        steps=preset["steps"],
        learning_rate=args.learning_rate,
        test_samples=len(test_set),
        preset=preset,
    )
    shutil.rmtree(folder / "trainer", ignore_errors=True)
    model.save_pretrained(folder / "model")  # every variant: the baselines can be evaluated too (`llava-vr eval`)
    processor.save_pretrained(folder / "model")
    (folder / "result.json").write_text(json.dumps(row, indent=2))
    print(json.dumps({k: v for k, v in row.items() if k not in ("losses", "preset")}), flush=True)
    return row


__all__ = ["evaluate", "frozen_pretrained_tower", "pretrain_tower", "run_dir", "run_one", "train"]
