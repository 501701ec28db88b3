"""The visual-forgetting experiment: does Vision Remember win back what token compression loses?

A fine-grained task where compression must lose information: 4 x 4 grids of digits on a 56-px image, one digit per
14-px tower patch, so each 2 x 2 pooled token mixes four digits. Question: "Read the grid."; answer: each cell's
letter (`a`-`p`, reading order) and its digit, `a3b5c7...` (exact match needs all 16 digits; per-digit accuracy is
reported too). The letters name the cells, so every variant finds a digit by content rather than by counting answer
tokens, which a from-scratch LLM learns far more slowly than the `mlp` variant's one-token-per-patch copy.

Protocol, the same for every variant and seed:
1. The small CLIP-like tower learns the digit under each patch and the patch's position (linear heads on its
   last hidden state, training-split images) and is then frozen: the stand-in for LLaVA's pretrained, frozen CLIP.
   (A tower trained end to end from scratch could learn to pack four digits into every patch before pooling, so
   pooling would not have to lose anything; and in trials with this answer format neither `mlp` nor pool + VR
   left chance level within 1000 steps that way.)
2. Projector, Vision Remember and a small Qwen2 (trained from scratch) learn the task through TRL's `SFTTrainer`
   (this project's SFT path, loss on the assistant reply only), same data, steps and seed:

    mlp                 16 tokens per image (no compression; + 1 newline)
    pool                adaptive_avg_pool, 4 tokens
    pool_vr_sela        adaptive_avg_pool + Vision Remember (SELA), 4 tokens
    pool_vr_global / pool_vr_deformable  (optional)

Exact-match accuracy on a held-out test split that shares no image with training. Every run writes
`<output-dir>/<variant>-seed<seed>/result.json` (and, for the Vision Remember variants, the trained model in
`model/`); `results.json` / `results.md` summarise every run of the same preset found in the folder, so runs in
several processes (`--jobs`) or several invocations add up. `--save-best-to` copies the best pool + VR model there
as a complete trust_remote_code checkpoint with a model card stating its measured accuracy.

    python examples/visual_forgetting/run_experiment.py --seeds 0 1 --jobs 2              # default CPU preset
    python examples/visual_forgetting/run_experiment.py --summarize-only --save-best-to DIR   # table + best model
"""

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from llava_vr import LlavaVRConfig, LlavaVRForConditionalGeneration, LlavaVRProcessor
from llava_vr.synthetic_documents import content_key, generate_samples, synthetic_document_dataset
from llava_vr.tokenizer_training import train_chat_tokenizer
from llava_vr.training_llava_vr import set_trainable

REPO = Path(__file__).resolve().parents[2]
CARD_TEMPLATE = REPO / "model_cards" / "llava_vr_visual_forgetting.md"

VARIANTS = {
    "mlp": dict(projector_type="mlp", vision_remember_layers=[]),
    "pool": dict(projector_type="adaptive_avg_pool", vision_remember_layers=[]),
    "pool_vr_sela": dict(projector_type="adaptive_avg_pool", vision_remember_interaction="sela"),
    "pool_vr_global": dict(projector_type="adaptive_avg_pool", vision_remember_interaction="global"),
    "pool_vr_deformable": dict(projector_type="adaptive_avg_pool", vision_remember_interaction="deformable"),
}
PRESETS = {
    # image px, digits per side, answer format, tower (hidden, layers), LLM (hidden, layers), VR layers, optimizer
    # steps, batch, training images; `pretrained_tower`: the tower first learns the digit and position of each
    # patch, then is frozen
    "cpu": dict(image=56, grid=4, question="all_labelled", tower=(32, 4), llm=(128, 4), vr_layers=[1, 3],
                steps=1500, batch=32, train=20000, pretrained_tower=True),
    "smoke": dict(image=56, grid=4, question="all_labelled", tower=(32, 2), llm=(64, 2), vr_layers=[1], steps=4,
                  batch=4, train=16, pretrained_tower=True, tower_steps=2, tower_eval=8),
}
PATCH = 14


def grid_digits(text: str) -> list[str]:
    """The digits of an answer in order (cell letters and separators dropped)."""
    return [c for c in text if c.isdigit()]


def build_tokenizer():
    corpus = [f"Read the grid. {d}{(d + 3) % 10}{(d + 7) % 10} abcdefghijklmnop" for d in range(10)]
    return train_chat_tokenizer(corpus + ["user assistant system"] * 20, vocab_size=290, individual_digits=True)


def build_model_and_processor(variant: str, preset: dict, tokenizer, seed: int):
    image = preset["image"]
    tower_hidden, tower_layers = preset["tower"]
    llm_hidden, llm_layers = preset["llm"]
    overrides = dict(VARIANTS[variant])
    overrides.setdefault("vision_remember_layers", preset["vr_layers"])
    config = LlavaVRConfig(
        vision_config=dict(
            model_type="clip_vision_model", hidden_size=tower_hidden, intermediate_size=2 * tower_hidden,
            num_hidden_layers=tower_layers, num_attention_heads=4, image_size=image, patch_size=PATCH,
        ),
        text_config=dict(
            model_type="qwen2", hidden_size=llm_hidden, intermediate_size=2 * llm_hidden, num_hidden_layers=llm_layers,
            num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=512,
            tie_word_embeddings=True,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=[[image, image]],
        vision_aspect_ratio="pad",
        vision_feature_layer=-1,
        vision_remember_feature_layers=list(range(max(1, tower_layers - 2), tower_layers + 1)),
        **overrides,
    )
    torch.manual_seed(seed)
    model = LlavaVRForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": image}, crop_size={"height": image, "width": image}, image_grid_pinpoints=[[image, image]],
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor = LlavaVRProcessor.from_model_config(config, image_processor, tokenizer)
    return model, processor


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

    def batch_of(samples):
        pixels = processor.image_processor([s.image for s in samples], return_tensors="pt")["pixel_values"][:, 0]
        labels = torch.tensor([[int(d) for d in grid_digits(s.answer)] for s in samples])
        return pixels, labels

    generator = torch.Generator().manual_seed(seed)
    digit_head = torch.nn.Linear(tower.config.hidden_size, 10)
    position_head = torch.nn.Linear(tower.config.hidden_size, grid * grid)
    heads = [*digit_head.parameters(), *position_head.parameters()]
    optimizer = torch.optim.AdamW([*tower.parameters(), *heads], lr=3e-3)
    train_samples = generate_samples(steps * batch // 4, seed + 7919, "train", **kwargs)
    tower.train()
    for step in range(steps):
        index = torch.randint(len(train_samples), (batch,), generator=generator).tolist()
        pixels, labels = batch_of([train_samples[i] for i in index])
        features = tower(pixel_values=pixels).last_hidden_state[:, 1:]
        loss = torch.nn.functional.cross_entropy(digit_head(features).flatten(0, 1), labels.flatten())
        loss = loss + torch.nn.functional.cross_entropy(position_head(features).flatten(0, 1),
                                                        positions.repeat(len(index)))
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


def grid_task(preset: dict) -> dict:
    """`generate_samples` / `synthetic_document_dataset` keyword arguments of the preset's digit-grid task."""
    return dict(kinds=("digit_grid",), size=preset["image"], grid=preset["grid"], question=preset["question"])


def datasets_for(preset: dict, seed: int, test_samples: int):
    """Training and held-out test datasets (TRL chats, question first); no test image is a training image."""
    from datasets import Dataset

    samples = generate_samples(preset["train"], seed, "train", **grid_task(preset))  # rendered once
    train = Dataset.from_list([s.to_chat(question_first=True) for s in samples])
    train_keys = {content_key(s.image) for s in samples}
    test = synthetic_document_dataset(test_samples, seed=seed, split="test", exclude=train_keys, question_first=True,
                                      **grid_task(preset))
    return train, test


def train(model, processor, dataset, preset: dict, seed: int, output_dir: Path, learning_rate: float):
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(output_dir),
        max_steps=preset["steps"],
        per_device_train_batch_size=preset["batch"],
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, preset["steps"] // 20),
        weight_decay=0.0,
        assistant_only_loss=True,
        max_length=None,
        logging_steps=max(1, preset["steps"] // 15),
        save_strategy="no",
        report_to=[],
        seed=seed,
        dataloader_num_workers=0,
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
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        prompts = [processor.apply_chat_template(m[:1], add_generation_prompt=True) for m in rows["messages"]]
        answers = [m[1]["content"][0]["text"] for m in rows["messages"]]
        inputs = processor(images=[i[0] for i in rows["images"]], text=prompts, return_tensors="pt", padding=True)
        begin = time.perf_counter()
        model(**inputs)
        prefill_times.append(time.perf_counter() - begin)
        generated = model.generate(**inputs, max_new_tokens=40, do_sample=False)
        texts = processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += sum(t.strip() == a for t, a in zip(texts, answers))
        chars += sum(sum(x == y for x, y in zip(grid_digits(t), grid_digits(a))) for t, a in zip(texts, answers))
        char_total += sum(len(grid_digits(a)) for a in answers)
    return correct / len(dataset), chars / char_total, statistics.median(prefill_times)


def run_dir(output_dir: Path, variant: str, seed: int) -> Path:
    return output_dir / f"{variant}-seed{seed}"


def run_one(variant: str, seed: int, preset: dict, tokenizer, datasets, args) -> dict:
    """Trains and evaluates one variant; writes `result.json` (and the model for Vision Remember variants)."""
    train_set, test_set = datasets
    folder = run_dir(args.output_dir, variant, seed)
    random.seed(seed)
    model, processor = build_model_and_processor(variant, preset, tokenizer, seed)
    tower_accuracy = None  # (digit, position)
    if preset.get("pretrained_tower"):
        torch.manual_seed(seed)
        tower_accuracy = pretrain_tower(model, processor, preset, seed, steps=preset.get("tower_steps", 400))
        print(f"pretrained tower, held-out per-patch accuracy: digit {tower_accuracy[0]:.3f}, position "
              f"{tower_accuracy[1]:.3f}", flush=True)
        set_trainable(model, ["projector", "vision_remember", "llm", "lm_head"])
    runtime, losses = train(model, processor, train_set, preset, seed, folder / "trainer", args.learning_rate)
    accuracy, digit_accuracy, prefill = evaluate(model, processor, test_set)
    row = dict(variant=variant, seed=seed, accuracy=accuracy, digit_accuracy=round(digit_accuracy, 4),
               tower_patch_accuracy=tower_accuracy and dict(digit=tower_accuracy[0], position=tower_accuracy[1]),
               train_seconds=round(runtime, 1), threads=torch.get_num_threads(),
               image_tokens=model.model.image_layouts(torch.tensor([[preset["image"]] * 2]))[0].num_tokens,
               prefill_seconds_per_batch=round(prefill, 4), first_loss=losses[0] if losses else math.nan,
               last_loss=losses[-1] if losses else math.nan, losses=losses, steps=preset["steps"],
               learning_rate=args.learning_rate, test_samples=len(test_set), preset=preset)
    shutil.rmtree(folder / "trainer", ignore_errors=True)
    if variant.startswith("pool_vr"):
        model.save_pretrained(folder / "model")
        processor.save_pretrained(folder / "model")
    (folder / "result.json").write_text(json.dumps(row, indent=2))
    print(json.dumps({k: v for k, v in row.items() if k not in ("losses", "preset")}), flush=True)
    return row


def collect(output_dir: Path, preset: dict) -> list[dict]:
    """Every finished run of `preset` under `output_dir`, ordered by variant then seed."""
    rows = [json.loads(p.read_text()) for p in sorted(output_dir.glob("*-seed*/result.json"))]
    as_saved = json.loads(json.dumps(preset))  # tuples become lists in result.json
    rows = [r for r in rows if r.get("preset") == as_saved]
    order = list(VARIANTS)
    return sorted(rows, key=lambda r: (order.index(r["variant"]), r["seed"]))


def run_in_subprocesses(args, pairs: list[tuple[str, int]]) -> None:
    """One child process per (variant, seed), at most `--jobs` at a time, `--threads` each."""
    waiting, running, failed = list(pairs), [], []
    while waiting or running:
        while waiting and len(running) < args.jobs:
            variant, seed = waiting.pop(0)
            command = [sys.executable, str(Path(__file__).resolve()), "--preset", args.preset, "--variants", variant,
                       "--seeds", str(seed), "--jobs", "1", "--threads", str(args.threads), "--test-samples",
                       str(args.test_samples), "--learning-rate", str(args.learning_rate), "--output-dir",
                       str(args.output_dir), "--no-summary"] + (["--steps", str(args.steps)] if args.steps else [])
            log = open(run_dir(args.output_dir, variant, seed).with_suffix(".log"), "w")
            print(f"started {variant} seed {seed} (log: {log.name})", flush=True)
            running.append(((variant, seed), subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(2)
        for entry in list(running):
            (variant, seed), process, log = entry
            if process.poll() is not None:
                running.remove(entry)
                log.close()
                print(f"finished {variant} seed {seed}: exit {process.returncode}", flush=True)
                if process.returncode:
                    failed.append(f"{variant} seed {seed} (see {log.name})")
    if failed:
        raise SystemExit("runs failed: " + ", ".join(failed))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="cpu")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["mlp", "pool", "pool_vr_sela"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, help="override the preset's optimizer steps")
    parser.add_argument("--test-samples", type=int, default=500)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel, one process each")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: cores / jobs)")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/visual_forgetting"))
    parser.add_argument("--summarize-only", action="store_true", help="train nothing: summarise the folder's runs")
    parser.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--save-best-to", type=Path, help="copy the best pool_vr_* model here, with a model card")
    parser.add_argument("--save-samples-to", type=Path, help="with --save-best-to: write the first held-out test "
                        "images of the best model's seed here (PNG + questions.json), for the quickstart")
    parser.add_argument("--num-samples", type=int, default=3)
    args = parser.parse_args(argv)
    preset = dict(PRESETS[args.preset])
    if args.steps:
        preset["steps"] = args.steps
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    torch.set_num_threads(args.threads)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    pairs = [(variant, seed) for seed in args.seeds for variant in args.variants]
    if not args.summarize_only and args.jobs > 1:
        run_in_subprocesses(args, pairs)
    elif not args.summarize_only:
        tokenizer = build_tokenizer()
        for seed in args.seeds:
            data = datasets_for(preset, seed, args.test_samples)
            for variant in args.variants:
                run_one(variant, seed, preset, tokenizer, data, args)
    if args.no_summary:
        return True
    results = collect(args.output_dir, preset)
    if not results:
        raise SystemExit(f"no finished run of preset {args.preset!r} in {args.output_dir}")
    table = summarize(results)
    slim = [{k: v for k, v in r.items() if k != "preset"} for r in results]
    (args.output_dir / "results.json").write_text(json.dumps(dict(preset=preset, results=slim), indent=2))
    (args.output_dir / "results.md").write_text(table)
    print(table)
    if args.save_best_to:
        save_best(results, args, preset)
    return results


def save_best(results: list[dict], args, preset: dict) -> None:
    """Copies the most accurate pool_vr_* model to `--save-best-to` and writes its model card and results."""
    candidates = [r for r in results if r["variant"].startswith("pool_vr")
                  and (run_dir(args.output_dir, r["variant"], r["seed"]) / "model").is_dir()]
    if not candidates:
        raise SystemExit("no trained Vision Remember model to save")
    best = max(candidates, key=lambda r: (r["accuracy"], r["digit_accuracy"]))
    target = args.save_best_to
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(run_dir(args.output_dir, best["variant"], best["seed"]) / "model", target)
    slim = [{k: v for k, v in r.items() if k not in ("losses", "preset")} for r in results]
    (target / "experiment.json").write_text(json.dumps(dict(preset=preset, best=slim[results.index(best)],
                                                            results=slim), indent=2))
    from llava_vr import LlavaVRConfig

    card = render_experiment_card(LlavaVRConfig.from_pretrained(target), best, results, preset, target.name)
    card.save(target / "README.md")
    print(f"saved the best Vision Remember model ({best['variant']}, seed {best['seed']}, exact match "
          f"{best['accuracy']:.3f}) to {target}")
    if args.save_samples_to:
        save_samples(args.save_samples_to, preset, best["seed"], args.num_samples)


def held_out_samples(preset: dict, seed: int, count: int):
    """The first `count` samples of the test split of `seed` (the evaluation's first images)."""
    return generate_samples(count, seed, "test", **grid_task(preset))


def save_samples(folder: Path, preset: dict, seed: int, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, sample in enumerate(held_out_samples(preset, seed, count)):
        name = f"digit_grid_test_seed{seed}_{index}.png"
        sample.image.save(folder / name)
        entries.append(dict(image=name, question=sample.question, answer=sample.answer))
    (folder / "questions.json").write_text(json.dumps(dict(
        source=f"visual-forgetting experiment, test split of seed {seed} (first {count} images)", samples=entries),
        indent=2) + "\n")
    print(f"wrote {count} held-out samples to {folder}")


def render_experiment_card(config, best: dict, results: list[dict], preset: dict, name: str):
    """The bundled model's card (`model_cards/llava_vr_visual_forgetting.md`) with its measured accuracy."""
    from huggingface_hub import ModelCard

    sys.path.insert(0, str(REPO / "conversion"))
    from llava_vr_card import architecture_kwargs, card_data

    data = card_data(None, "apache-2.0", None)
    data.tags = data.tags + ["synthetic-digit-grids"]
    model = LlavaVRForConditionalGeneration(config)
    return ModelCard.from_template(
        data, template_path=str(CARD_TEMPLATE), model_name=name, repo_id=name, best=best, results=results,
        grid=preset["grid"], image=preset["image"], patch=PATCH, question="Read the grid.", steps=preset["steps"],
        example_answer=held_out_samples(preset, best["seed"], 1)[0].answer,
        batch=preset["batch"], seeds=sorted({r["seed"] for r in results}),
        variants=list(dict.fromkeys(r["variant"] for r in results)), vocab_size=config.text_config.vocab_size,
        parameters_total=f"{sum(p.numel() for p in model.parameters()):,}", **architecture_kwargs(config),
    )


def summarize(results) -> str:
    """Markdown table: one row per variant, means over seeds with the per-seed values beside them."""
    lines = ["| variant | image tokens | seeds | exact match (mean) | per seed | per-digit accuracy (mean) | per seed | "
             "train s (mean) |", "|---|---|---|---|---|---|---|---|"]
    for variant in dict.fromkeys(r["variant"] for r in results):
        rows = [r for r in results if r["variant"] == variant]
        exact, digits = [r["accuracy"] for r in rows], [r["digit_accuracy"] for r in rows]
        lines.append(
            f"| {variant} | {rows[0]['image_tokens']} | {', '.join(str(r['seed']) for r in rows)} | "
            f"{statistics.mean(exact):.3f} | {', '.join(f'{a:.3f}' for a in exact)} | {statistics.mean(digits):.3f} | "
            f"{', '.join(f'{a:.3f}' for a in digits)} | {statistics.mean(r['train_seconds'] for r in rows):.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
