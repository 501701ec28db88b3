"""The visual-forgetting experiment: does Vision Remember win back what token compression loses?

A fine-grained task where compression must lose information: 4 x 4 grids of digits on a 56-px image, one digit per
14-px tower patch, so each 2 x 2 pooled token mixes four digits. Question: "Read the grid." (answer: the 16 digits
in reading order; exact match needs all 16, per-digit accuracy is reported too). Small
CLIP-like tower + small Qwen2 trained from scratch through TRL's `SFTTrainer` (this project's SFT path), same data,
steps and seed for every variant:

    mlp                 16 tokens per image (no compression; + 1 newline)
    pool                adaptive_avg_pool, 4 tokens
    pool_vr_sela        adaptive_avg_pool + Vision Remember (SELA), 4 tokens
    pool_vr_global / pool_vr_deformable  (optional)

Exact-match accuracy on a held-out test split that shares no image with training. Writes results.json/.md to
--output-dir and, with --save-best-to, the best pool+VR model as a complete trust_remote_code checkpoint.

    python examples/visual_forgetting/run_experiment.py --seeds 0 1            # default CPU preset
"""

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from llava_vr import LlavaVRConfig, LlavaVRForConditionalGeneration, LlavaVRProcessor
from llava_vr.synthetic_documents import content_key, generate_samples, synthetic_document_dataset
from llava_vr.tokenizer_training import train_chat_tokenizer

VARIANTS = {
    "mlp": dict(projector_type="mlp", vision_remember_layers=[]),
    "pool": dict(projector_type="adaptive_avg_pool", vision_remember_layers=[]),
    "pool_vr_sela": dict(projector_type="adaptive_avg_pool", vision_remember_interaction="sela"),
    "pool_vr_global": dict(projector_type="adaptive_avg_pool", vision_remember_interaction="global"),
    "pool_vr_deformable": dict(projector_type="adaptive_avg_pool", vision_remember_interaction="deformable"),
}
PRESETS = {
    # image px, digits per side, tower (hidden, layers), LLM (hidden, layers), VR layers, steps, batch, train samples
    "cpu": dict(image=56, grid=4, question="all", tower=(32, 4), llm=(128, 4), vr_layers=[1, 3], steps=1500, batch=32,
                train=20000),
    "smoke": dict(image=56, grid=4, question="all", tower=(32, 2), llm=(64, 2), vr_layers=[1], steps=4, batch=4,
                  train=16),
}
PATCH = 14


def build_tokenizer():
    corpus = [f"Read the grid. Read row {r}. {d} {(d + 3) % 10} {(d + 7) % 10}" for r in range(1, 5) for d in range(10)]
    return train_chat_tokenizer(corpus + ["user assistant system"] * 20, vocab_size=290)


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


def datasets_for(preset: dict, seed: int, test_samples: int):
    kwargs = dict(kinds=("digit_grid",), size=preset["image"], grid=preset["grid"], question=preset["question"])
    train = synthetic_document_dataset(preset["train"], seed=seed, split="train", question_first=True, **kwargs)
    train_keys = {content_key(s.image) for s in generate_samples(preset["train"], seed, "train", **kwargs)}
    test = synthetic_document_dataset(test_samples, seed=seed, split="test", exclude=train_keys, question_first=True,
                                      **kwargs)
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
        chars += sum(sum(x == y for x, y in zip(t.strip().split(), a.split())) for t, a in zip(texts, answers))
        char_total += sum(len(a.split()) for a in answers)
    return correct / len(dataset), chars / char_total, statistics.median(prefill_times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="cpu")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["mlp", "pool", "pool_vr_sela"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, help="override the preset's optimizer steps")
    parser.add_argument("--test-samples", type=int, default=500)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/visual_forgetting"))
    parser.add_argument("--save-best-to", type=Path, help="save the best pool_vr_* model + processor here")
    args = parser.parse_args(argv)
    preset = dict(PRESETS[args.preset])
    if args.steps:
        preset["steps"] = args.steps
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tokenizer = build_tokenizer()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    results, best = [], None
    for seed in args.seeds:
        train_set, test_set = datasets_for(preset, seed, args.test_samples)
        for variant in args.variants:
            random.seed(seed)
            model, processor = build_model_and_processor(variant, preset, tokenizer, seed)
            runtime, losses = train(model, processor, train_set, preset, seed, args.output_dir / f"{variant}-{seed}",
                                    args.learning_rate)
            accuracy, digit_accuracy, prefill = evaluate(model, processor, test_set)
            row = dict(variant=variant, seed=seed, accuracy=accuracy, digit_accuracy=round(digit_accuracy, 4),
                       train_seconds=round(runtime, 1),
                       image_tokens=model.model.image_layouts(torch.tensor([[preset["image"]] * 2]))[0].num_tokens,
                       prefill_seconds_per_batch=round(prefill, 4), first_loss=losses[0] if losses else math.nan,
                       last_loss=losses[-1] if losses else math.nan, steps=preset["steps"], test_samples=len(test_set))
            results.append(row)
            print(json.dumps(row), flush=True)
            if variant.startswith("pool_vr") and (best is None or accuracy > best[0]):
                best = (accuracy, model, processor, row)
            (args.output_dir / "results.json").write_text(json.dumps(dict(preset=preset, results=results), indent=2))
    table = summarize(results)
    (args.output_dir / "results.md").write_text(table)
    print(table)
    if args.save_best_to and best is not None:
        accuracy, model, processor, row = best
        model.save_pretrained(args.save_best_to)
        processor.save_pretrained(args.save_best_to)
        (args.save_best_to / "experiment.json").write_text(json.dumps(dict(preset=preset, best=row,
                                                                           results=results), indent=2))
        print(f"saved the best Vision Remember model ({row['variant']}, seed {row['seed']}, "
              f"accuracy {accuracy:.3f}) to {args.save_best_to}")
    return results


def summarize(results) -> str:
    lines = ["| variant | image tokens | exact match (mean over seeds) | per seed | digit accuracy (mean) | train s |",
             "|---|---|---|---|---|---|"]
    for variant in dict.fromkeys(r["variant"] for r in results):
        rows = [r for r in results if r["variant"] == variant]
        accs = [r["accuracy"] for r in rows]
        lines.append(
            f"| {variant} | {rows[0]['image_tokens']} | {statistics.mean(accs):.3f} | "
            f"{', '.join(f'{a:.3f}' for a in accs)} | {statistics.mean(r['digit_accuracy'] for r in rows):.3f} | "
            f"{statistics.mean(r['train_seconds'] for r in rows):.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
