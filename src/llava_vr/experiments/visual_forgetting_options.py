# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The command line of `llava-vr experiment`, its variants and presets: torch-free, so that `--help` answers at once
(`llava_vr_cli.HELP_PARSERS`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..registries_llava_vr import VR_INTERACTIONS

DESCRIPTION = """The visual-forgetting experiment: does Vision Remember win back what token compression loses?

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
    pool_vr_global / pool_vr_deformable  (optional; one `pool_vr_*` per registered VR interaction)

Exact-match accuracy on a held-out test split that shares no image with training. Every run writes
`<output-dir>/<variant>-seed<seed>/result.json` and the trained model in `model/` (a trust_remote_code checkpoint
that `lmms-eval --model llava_vr` can score); `results.json` / `results.md` summarise every run of the same preset
found in the folder, so runs in several processes (`--jobs`) or several invocations add up. `--save-best-to` copies
the best pool + VR model there as a complete trust_remote_code checkpoint with a model card stating its measured
accuracy.

Nothing is overwritten unasked: a non-empty `--save-best-to` / `--save-samples-to` folder, or a finished run of the
same variant and seed in `--output-dir`, stops the command before anything trains unless `--overwrite` is given.

    llava-vr experiment --seeds 0 1 --jobs 2                        # default CPU preset (about an hour)
    llava-vr experiment --preset smoke --output-dir runs/smoke      # seconds: does it run here?
    llava-vr experiment --summarize-only --save-best-to DIR         # table + best model
"""

# variant -> LlavaVRConfig overrides: no compression, pooling alone, pooling + each registered VR interaction at
# the defaults (VR as wide as the multi-level features, token self-attention, saliency for SELA only), and two SELA
# ablations: VR as wide as the tower (`narrow`, "tower" is replaced by the preset's tower width) and the paper's v1
# (no token self-attention)
VARIANTS = {
    "mlp": dict(projector_type="mlp", vision_remember_layers=[]),
    "pool": dict(projector_type="adaptive_avg_pool", vision_remember_layers=[]),
    **{
        f"pool_vr_{interaction}": dict(projector_type="adaptive_avg_pool", vision_remember_interaction=interaction)
        for interaction in VR_INTERACTIONS
    },
    "pool_vr_sela_narrow": dict(projector_type="adaptive_avg_pool", vision_remember_hidden_size="tower"),
    "pool_vr_sela_v1": dict(projector_type="adaptive_avg_pool", vision_remember_self_attention=False),
}
PRESETS = {
    # image px, digits per side, answer format, tower (hidden, layers), LLM (hidden, layers), VR layers, optimizer
    # steps, batch, training images; `pretrained_tower`: the tower first learns the digit and position of each
    # patch, then is frozen
    "cpu": dict(
        image=56,
        grid=4,
        question="all_labelled",
        tower=(32, 4),
        llm=(128, 4),
        vr_layers=[1, 3],
        steps=1500,
        batch=32,
        train=20000,
        pretrained_tower=True,
    ),
    "smoke": dict(
        image=56,
        grid=4,
        question="all_labelled",
        tower=(32, 2),
        llm=(64, 2),
        vr_layers=[1],
        steps=4,
        batch=4,
        train=16,
        pretrained_tower=True,
        tower_steps=2,
        tower_eval=8,
    ),
}

# preset -> (seconds of data, tower pretraining and evaluation; seconds per optimizer step) of one run on one core of
# the reference 2-core CPU (AMD EPYC), for the plan the command prints; not part of the preset (results match on it)
RUN_SECONDS = {"cpu": (100, 0.42), "smoke": (10, 0.5)}
# preset -> held-out test images when --test-samples is not given (evaluation is generation: ~1 s per 6 images on one
# core, so 500 would make the smoke run minutes instead of seconds); not part of the preset, like RUN_SECONDS
TEST_SAMPLES = {"cpu": 500, "smoke": 8}


def build_parser() -> argparse.ArgumentParser:
    """The command line of `llava-vr experiment` (its `--help`: the experiment's description)."""
    parser = argparse.ArgumentParser(
        prog="llava-vr experiment", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=PRESETS, default="cpu")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["mlp", "pool", "pool_vr_sela"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, help="override the preset's optimizer steps")
    parser.add_argument(
        "--test-samples",
        type=int,
        help="held-out test images per seed (default: "
        + ", ".join(f"{count} for --preset {name}" for name, count in TEST_SAMPLES.items())
        + ")",
    )
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel, one process each")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: cores / jobs)")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/visual_forgetting"))
    parser.add_argument("--summarize-only", action="store_true", help="train nothing: summarise the folder's runs")
    parser.add_argument("--save-best-to", type=Path, help="copy the best run of --best-of here, with a model card")
    parser.add_argument(
        "--best-of",
        choices=[v for v in VARIANTS if v.startswith("pool_vr")],
        default="pool_vr_sela",
        help="the Vision Remember variant whose most accurate run --save-best-to copies (default: the "
        "default VR, SELA)",
    )
    parser.add_argument(
        "--save-samples-to",
        type=Path,
        help="with --save-best-to: write the first held-out test "
        "images of the best model's seed here (PNG + questions.json), for the quickstart",
    )
    parser.add_argument("--num-samples", type=int, default=3)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --save-best-to / "
        "--save-samples-to folder and finished runs of the same variant and seed in --output-dir",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line; `threads` defaults to cores / jobs."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.save_samples_to and not args.save_best_to:
        parser.error("--save-samples-to writes the samples of the model --save-best-to saves: give both")
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    if args.test_samples is None:
        args.test_samples = TEST_SAMPLES[args.preset]
    return args


__all__ = ["DESCRIPTION", "PRESETS", "RUN_SECONDS", "TEST_SAMPLES", "VARIANTS", "build_parser", "parse_args"]
