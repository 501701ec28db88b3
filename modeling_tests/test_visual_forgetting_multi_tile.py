"""The multi-tile visual-forgetting experiment (issue 23): its AnyRes task, the VisionZip-style `saliency_top_k`
projector it compares against, a smoke run that adds each finished run to `results.json` and resumes, and the
summary's numbers."""

import hashlib
import json
import random
import re

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError

from llava_vr import LlavaVRForConditionalGeneration
from llava_vr.data.synthetic_documents import render_digit_grid
from llava_vr.experiments import multi_tile
from llava_vr.experiments.multi_tile_options import PRESETS
from llava_vr.experiments.multi_tile_results import recovered_share, summarize
from llava_vr.experiments.multi_tile_task import (
    SHADES,
    build_model_and_processor,
    build_tokenizer,
    datasets_for,
    generate,
    render_multi_tile,
)
from llava_vr.projectors_llava_vr import LlavaVRSaliencyTopKProjector
from llava_vr.testing_utils import tiny_config, tiny_model


def test_saliency_top_k_keeps_the_highest_norm_patches_of_each_tile_in_raster_order():
    projector = tiny_model(projector_type="saliency_top_k", vision_remember_layers=[]).model.multi_modal_projector
    assert isinstance(projector, LlavaVRSaliencyTopKProjector) and projector.token_grid == 2
    torch.manual_seed(0)
    features = torch.randn(2, 16, projector.linear_1.in_features) * 0.1
    scale = torch.ones(2, 16)
    scale[0, [9, 2, 14, 5]] = 10.0  # tile 0 keeps patches 2, 5, 9, 14 (raster order, not order of norm)
    scale[1, [0, 1, 2, 15]] = torch.tensor([3.0, 5.0, 7.0, 9.0])
    features = features * scale[..., None]
    out = projector(features)
    expected = torch.stack([projector.mlp(features[0, [2, 5, 9, 14]]), projector.mlp(features[1, [0, 1, 2, 15]])])
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_saliency_top_k_is_refused_a_budget_above_the_patch_grid_before_anything_is_built():
    with pytest.raises(
        StrictDataclassClassValidationError,
        match="'saliency_top_k' cannot give that token budget",
    ):
        tiny_config(projector_type="saliency_top_k", projector_pooled_grid_size=5, vision_remember_layers=[])


def test_saliency_top_k_with_vision_remember_is_refused_at_config_and_at_load_time(tmp_path):
    """VR's windows are the regions of grid cells; a selected patch is not at its cell, so the pair is refused."""
    with pytest.raises(StrictDataclassClassValidationError, match="'saliency_top_k' cannot be used with Vision"):
        tiny_config(projector_type="saliency_top_k", vision_remember_layers=[1])
    tiny_model(projector_type="saliency_top_k", vision_remember_layers=[]).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"vision_remember_layers=\[1\]\): its tokens are selected patches"):
        LlavaVRForConditionalGeneration.from_pretrained(tmp_path, vision_remember_layers=[1])


def test_multi_tile_images_are_cut_into_exactly_their_tiles_and_the_answer_is_the_named_row():
    tokenizer = build_tokenizer()
    _, processor = build_model_and_processor("pool", PRESETS["smoke"], tokenizer, seed=0)
    samples = generate(12, seed=3, split="train", tile=56, grid=4)
    assert {s.image.size for s in samples} == {(112, 112), (168, 56)}  # both layouts occur
    for sample in samples:
        cols, rows = sample.image.width // 56, sample.image.height // 56
        match = re.fullmatch(r"Read row ([1-4]) of tile ([1-9])\.", sample.question)
        assert match and int(match[2]) <= rows * cols and re.fullmatch(r"a\db\dc\dd\d", sample.answer)
        pixels = processor.image_processor([sample.image], return_tensors="pt")["pixel_values"][0]
        crops = np.asarray(sample.image, dtype=np.float32) / 127.5 - 1.0  # mean = std = 0.5
        for k in range(rows * cols):
            tile = crops[(k // cols) * 56 : (k // cols + 1) * 56, (k % cols) * 56 : (k % cols + 1) * 56]
            np.testing.assert_allclose(pixels[1 + k].permute(1, 2, 0).numpy(), tile, atol=1e-5)
    # a question names one row of one tile, and the answer is that row: the tile's own render says so
    rng = random.Random(11)
    sample = render_multi_tile(random.Random(11), layouts=("2x2",))
    rng.choice(["2x2"])
    tiles = [render_digit_grid(rng, size=56, grid=4, question="all").answer.split() for _ in range(4)]
    row, tile = map(int, re.fullmatch(r"Read row (\d) of tile (\d)\.", sample.question).groups())
    assert sample.answer == "".join(
        f"{c}{d}" for c, d in zip("abcd", tiles[tile - 1][4 * (row - 1) : 4 * row], strict=True)
    )


def test_a_tile_question_is_answered_with_every_digit_of_the_named_tile_and_an_unknown_question_is_refused():
    rng = random.Random(5)
    sample = render_multi_tile(random.Random(5), layouts=("2x2",), question="tile")
    rng.choice(["2x2"])
    tiles = [render_digit_grid(rng, size=56, grid=4, question="all").answer.split() for _ in range(4)]
    tile = int(re.fullmatch(r"Read tile (\d)\.", sample.question)[1])
    assert sample.answer == "".join(f"{c}{d}" for c, d in zip("abcdefghijklmnop", tiles[tile - 1], strict=True))
    labelled = render_multi_tile(random.Random(5), layouts=("2x2",), question="tile_labelled")
    assert labelled.answer == "".join("ABCD"[tile - 1] + sample.answer[i : i + 2] for i in range(0, 32, 2))
    ids = build_tokenizer()(labelled.answer)["input_ids"]
    assert len(ids) == 32  # one token per label ("Ba"), one per digit
    with pytest.raises(ValueError, match="question must be 'row', 'tile' or 'tile_labelled', got 'cell'"):
        render_multi_tile(random.Random(5), question="cell")


def test_shaded_tiles_keep_their_digits_on_the_grey_of_their_position():
    plain = render_multi_tile(random.Random(9), layouts=("2x2",), question="tile")
    grey = render_multi_tile(random.Random(9), layouts=("2x2",), question="tile", shade=True)
    assert (grey.question, grey.answer) == (plain.question, plain.answer)
    plain_pixels, grey_pixels = np.asarray(plain.image.convert("L")), np.asarray(grey.image.convert("L"))
    for k, shade in enumerate(SHADES):
        rows, cols = slice((k // 2) * 56, (k // 2 + 1) * 56), slice((k % 2) * 56, (k % 2 + 1) * 56)
        background = plain_pixels[rows, cols] == 255
        assert (grey_pixels[rows, cols][background] == shade).all()
        assert (grey_pixels[rows, cols][plain_pixels[rows, cols] == 0] == 0).all()  # the ink stays black


def test_smoke_run_adds_each_finished_run_to_results_json_and_a_second_command_resumes(tmp_path, monkeypatch):
    output = tmp_path / "runs"
    common = ["--preset", "smoke", "--seeds", "0", "--test-samples", "2", "--output-dir", str(output)]
    multi_tile.run(multi_tile.parse_args([*common, "--variants", "pool"]))
    first = json.loads((output / "results.json").read_text())["runs"]
    assert [(r["variant"], r["seed"]) for r in first] == [("pool", 0)]
    assert all(r["image_tokens"] == {"2x2": 24, "1x3": 18} and r["test_samples"] == 2 for r in first)
    assert (output / "accuracy_vs_tokens.png").stat().st_size > 1000
    trained = []
    real_run_one = multi_tile.run_one
    monkeypatch.setattr(multi_tile, "run_one", lambda v, *a, **k: trained.append(v) or real_run_one(v, *a, **k))
    multi_tile.run(multi_tile.parse_args([*common, "--variants", "pool", "pool_vr_sela_qafter"]))
    runs = json.loads((output / "results.json").read_text())["runs"]
    assert trained == ["pool_vr_sela_qafter"] and runs[:1] == first and len(runs) == 2
    assert runs[1]["question_first"] is False
    # the seed's frozen tower was pretrained once and loaded by the later run
    assert runs[1]["tower_patch_accuracy"] == first[0]["tower_patch_accuracy"]
    assert len(list((output / "towers").glob("*.pt"))) == 1
    assert "| pool_vr_sela_qafter | after | 24 / 18 | 0 |" in (output / "results.md").read_text()


def row(variant, seed, accuracy, digit, question_first=True, tokens=24):
    return dict(
        variant=variant,
        seed=seed,
        accuracy=accuracy,
        digit_accuracy=digit,
        question_first=question_first,
        image_tokens={"2x2": tokens, "1x3": tokens - 6},
        train_seconds=10.0,
    )


def test_summary_reports_loss_recovered_against_the_pooling_run_of_the_same_question_position():
    runs = [
        row("mlp", 0, 1.0, 1.0, tokens=88),
        row("pool", 0, 0.2, 0.6),
        row("pool_qafter", 0, 0.4, 0.7, question_first=False),
        row("pool_vr_sela", 0, 0.8, 0.9),
        row("pool_vr_sela", 1, 0.5, 0.7),
        row("pool_vr_sela_qafter", 0, 0.7, 0.85, question_first=False),
    ]
    assert recovered_share(runs, "pool_vr_sela") == pytest.approx((0.65 - 0.2) / (1.0 - 0.2))
    assert recovered_share(runs, "pool_vr_sela_qafter", pool="pool_qafter") == pytest.approx(0.5)
    table = summarize(runs)
    assert "| pool_vr_sela | first | 24 / 18 | 0, 1 | 0.650 ± 0.212 | 0.800, 0.500 |" in table
    assert "| 56 % / 50 % |" in table  # exact (0.65 - 0.2) / 0.8, digit (0.8 - 0.6) / 0.4
    assert "| pool_vr_sela_qafter | after | 24 / 18 | 0 | 0.700 | 0.700 | 0.850 | 0.850 | 50 % / 50 % |" in table
    assert "| pool | 0.200 | 0.400 | -0.200 / -0.100 | first: 0; after: 0 |" in table
    assert "| pool_vr_sela | 0.650 | 0.700 | -0.050 / -0.050 | first: 0, 1; after: 0 |" in table
    assert "Not run: pool_2x, saliency_top_k, pool_vr_global, pool_vr_deformable, pool_vr_sela_v1." in table


def test_repeated_tile_curriculum_repeats_digits_in_training_images_only_and_leaves_other_streams_unchanged():
    """`repeat_fraction`: that share of training images hold the same digits in every tile (only the shade differs);
    held-out test images never do, and at 0 the samples are those of the streams before the option existed."""

    def distinct_tiles(image) -> int:
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
        tiles = [pixels[(k // 2) * 56 : (k // 2 + 1) * 56, (k % 2) * 56 : (k % 2 + 1) * 56] for k in range(4)]
        ink = [np.round(1 - tile / tile.max(), 1) for tile in tiles]  # the ink alone: each tile on its own grey
        return len({tile.tobytes() for tile in ink})

    train = generate(40, 0, "train", 56, 4, ("2x2",), "tile_labelled", True, repeat_fraction=0.5)
    repeated = sum(distinct_tiles(s.image) == 1 for s in train)
    assert 10 <= repeated <= 30, repeated  # about half
    assert all(distinct_tiles(s.image) in (1, 4) for s in train)
    preset = dict(PRESETS["smoke"], layouts=["2x2"], train=40, repeat_fraction=0.5)
    train_set, test_set, _ = datasets_for(preset, 0, 20, question_first=True)
    assert sum(distinct_tiles(row["images"][0]) == 1 for row in train_set) == repeated
    assert len(test_set) == 20 and all(distinct_tiles(row["images"][0]) == 4 for row in test_set)
    # at 0, the stream of the recorded runs before the option (answers and pixels as generated then)
    before = generate(3, 0, "train", 56, 4, ("2x2",), "tile_labelled", True)
    assert [s.answer[:6] for s in before] == ["Da5Db2", "Ca1Cb0", "Aa6Ab8"]
    digest = hashlib.sha256(b"".join(s.image.tobytes() for s in before)).hexdigest()
    assert digest.startswith("9d11729e31f5c18b")
