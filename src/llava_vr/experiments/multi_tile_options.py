# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The command line of `python -m llava_vr.experiments.multi_tile`, its variants and presets: torch-free, so that
`--help` answers at once."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """The multi-tile visual-forgetting experiment: region questions on AnyRes images of several tiles.

Each image is 2 x 2 tiles of 56 px (112 x 112; the smoke preset mixes in 1 x 3, 56 x 168), each tile its own 4 x 4
grid of digits (one digit per 14-px tower patch). AnyRes (LLaVA-NeXT) cuts the image into those tiles plus the base
tile (the whole image at 56 px); every tile is its own 4 x 4 feature grid. The question names one tile by its number
in reading order ("Read tile 2.", the top-right one); the answer is that tile's 16 digits after their cell letters
(`a3b5...p1`), so it needs that region's detail only. Asked before the image (question first, the default), the LLM's
vision tokens have seen the question when Vision Remember runs. (`question="row"` in a preset asks for one row of
one tile instead, "Read row 3 of tile 2.": on it even `mlp` stayed at chance level for 400 steps.)

Same protocol as `llava-vr experiment`: a tower that has learnt what is where on single tiles (digit and position of
each patch), then frozen; projector, Vision Remember and a small Qwen2 trained through TRL's `SFTTrainer` (this
project's SFT path), same data, steps and seed for every variant; exact match on held-out test images that share no
image with training (pixel digest).

Runs go one after another in this process; each finished run is added to `<output-dir>/results.json` at once (a run
already there is skipped, so an interrupted command resumes where it stopped).

    python -m llava_vr.experiments.multi_tile --variants mlp pool pool_vr_sela --seeds 0
    python -m llava_vr.experiments.multi_tile --preset smoke --output-dir runs/mt-smoke
    python -m llava_vr.experiments.multi_tile --summarize-only --output-dir examples/visual_forgetting/multi_tile
"""

# variant -> (LlavaVRConfig overrides, question first). Pooling to 2 x 2 tokens per tile is the compression whose
# budget every baseline shares (`pool_2x`: 3 x 3 = 9 tokens per tile, 2.25 x, the nearest square grid to 2 x)
VARIANTS = {
    "mlp": (dict(projector_type="mlp", vision_remember_layers=[]), True),
    "pool": (dict(projector_type="adaptive_avg_pool", vision_remember_layers=[]), True),
    "pool_qafter": (dict(projector_type="adaptive_avg_pool", vision_remember_layers=[]), False),
    "pool_2x": (
        dict(projector_type="adaptive_avg_pool", projector_pooled_grid_size=3, vision_remember_layers=[]),
        True,
    ),
    "saliency_top_k": (dict(projector_type="saliency_top_k", vision_remember_layers=[]), True),
    "pool_vr_sela": (dict(projector_type="adaptive_avg_pool"), True),
    "pool_vr_sela_qafter": (dict(projector_type="adaptive_avg_pool"), False),
    "pool_vr_global": (dict(projector_type="adaptive_avg_pool", vision_remember_interaction="global"), True),
    "pool_vr_deformable": (dict(projector_type="adaptive_avg_pool", vision_remember_interaction="deformable"), True),
    "pool_vr_sela_v1": (dict(projector_type="adaptive_avg_pool", vision_remember_self_attention=False), True),
}
# the run order asked for (issue 23): the baselines and the default VR first, then the other interactions
PRIORITY = [
    "mlp",
    "pool",
    "pool_qafter",
    "pool_2x",
    "saliency_top_k",
    "pool_vr_sela",
    "pool_vr_sela_qafter",
    "pool_vr_global",
    "pool_vr_deformable",
    "pool_vr_sela_v1",
]
PRESETS = {
    # tile px, digits per tile side, AnyRes layouts, question ("tile_labelled", "tile" or "row"), tiles shaded by
    # position, tower (hidden, layers), LLM (hidden, layers), VR layers, optimizer steps, batch, training images,
    # share of training images whose tiles all hold the same digits (the curriculum that let `mlp` leave chance level:
    # `trials.md`), tower pretraining steps
    "cpu": dict(
        tile=56,
        grid=4,
        layouts=["2x2"],
        question="tile_labelled",
        shade=True,
        tower=(32, 4),
        llm=(128, 4),
        vr_layers=[1, 3],
        steps=1500,
        batch=16,
        train=3200,
        repeat_fraction=0.25,
    ),
    "smoke": dict(
        tile=56,
        grid=4,
        layouts=["2x2", "1x3"],
        question="tile_labelled",
        shade=True,
        tower=(32, 2),
        llm=(64, 2),
        vr_layers=[1],
        steps=3,
        batch=4,
        train=12,
        tower_steps=2,
        tower_eval=8,
    ),
}
TEST_SAMPLES = {"cpu": 100, "smoke": 6}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llava_vr.experiments.multi_tile",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", choices=PRESETS, default="cpu")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=PRIORITY[:7])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="override the preset's optimizer steps")
    parser.add_argument(
        "--repeat-fraction",
        type=float,
        help="override the preset's share of training images whose tiles all hold the same digits (0 to 1)",
    )
    parser.add_argument("--test-samples", type=int, help="held-out test images per seed")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/visual_forgetting_multi_tile"))
    parser.add_argument("--summarize-only", action="store_true", help="train nothing: summarise results.json")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.test_samples is None:
        args.test_samples = TEST_SAMPLES[args.preset]
    return args


__all__ = ["DESCRIPTION", "PRESETS", "PRIORITY", "TEST_SAMPLES", "VARIANTS", "build_parser", "parse_args"]
