"""The visual-forgetting experiment runs end to end (smoke preset), and the bundled model it produced still loads
through trust_remote_code and reads held-out digit grids as accurately as the experiment measured."""

import contextlib
import importlib.util
import io
import json
import re
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

from llava_vr.experiments import visual_forgetting
from llava_vr.experiments.visual_forgetting_runs import evaluate, pretrain_tower
from llava_vr.experiments.visual_forgetting_task import (
    PRESETS,
    build_model_and_processor,
    build_tokenizer,
    held_out_samples,
)
from llava_vr.hub.refusals import LlavaVRRefusal

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "examples" / "trained_models" / "llava-vr-tiny-digit-grid"


def test_the_smoke_preset_evaluates_few_test_images_unless_told_so_the_readme_smoke_run_takes_seconds():
    """Evaluation generates every answer: 500 test images per run made `--preset smoke` (6 runs) take minutes."""
    assert visual_forgetting.parse_args(["--preset", "smoke"]).test_samples == 8
    assert visual_forgetting.parse_args([]).test_samples == 500  # the cpu preset: the README's results
    assert visual_forgetting.parse_args(["--preset", "smoke", "--test-samples", "20"]).test_samples == 20


def test_experiment_smoke_preset_in_two_processes_writes_results_best_model_card_and_samples(tmp_path):
    output, best, samples = tmp_path / "runs", tmp_path / "best", tmp_path / "samples"
    rows = visual_forgetting.run(
        visual_forgetting.parse_args(
            [
                "--preset",
                "smoke",
                "--seeds",
                "0",
                "1",
                "--jobs",
                "2",
                "--variants",
                "pool_vr_sela",
                "--test-samples",
                "4",
                "--output-dir",
                str(output),
                "--save-best-to",
                str(best),
                "--save-samples-to",
                str(samples),
                "--num-samples",
                "2",
            ]
        )
    )
    assert sorted((r["variant"], r["seed"]) for r in rows) == [("pool_vr_sela", 0), ("pool_vr_sela", 1)]
    assert all(r["image_tokens"] == 5 and r["test_samples"] == 4 and len(r["losses"]) >= 1 for r in rows)
    assert all(set(r["tower_patch_accuracy"]) == {"digit", "position"} for r in rows)
    summary = json.loads((output / "results.json").read_text())
    assert len(summary["results"]) == 2 and "| pool_vr_sela | 5 | 0, 1 |" in (output / "results.md").read_text()
    # summarising again finds the same runs on disk and trains nothing
    again = visual_forgetting.run(
        visual_forgetting.parse_args(["--preset", "smoke", "--output-dir", str(output), "--summarize-only"])
    )
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows]

    experiment = json.loads((best / "experiment.json").read_text())
    assert experiment["best"]["variant"] == "pool_vr_sela"
    card = (best / "README.md").read_text()
    assert f"exact match {experiment['best']['accuracy']:.3f}" in card and "trained from scratch" in card
    model = AutoModelForImageTextToText.from_pretrained(best, trust_remote_code=True)
    assert type(model).__name__ == "LlavaVRForConditionalGeneration" and model.config.vision_remember_layers == [1]
    written = json.loads((samples / "questions.json").read_text())["samples"]
    expected = held_out_samples(PRESETS["smoke"], experiment["best"]["seed"], 2)
    assert [s["answer"] for s in written] == [s.answer for s in expected]
    assert re.fullmatch(r"(?:[a-p][0-9]){16}", expected[0].answer)

    # saving again into the same (now non-empty) folders takes --overwrite
    again = [
        "--preset",
        "smoke",
        "--output-dir",
        str(output),
        "--summarize-only",
        "--save-best-to",
        str(best),
        "--save-samples-to",
        str(samples),
        "--num-samples",
        "1",
    ]
    with pytest.raises(LlavaVRRefusal, match="--overwrite"):
        visual_forgetting.run(visual_forgetting.parse_args(again))
    visual_forgetting.run(visual_forgetting.parse_args([*again, "--overwrite"]))
    assert len(json.loads((samples / "questions.json").read_text())["samples"]) == 1
    assert len(list(samples.glob("*.png"))) == 1


def refuse_to_train(*args, **kwargs):
    raise AssertionError("the experiment trained before checking what it would overwrite")


def test_experiment_refuses_to_replace_a_model_folder_without_overwrite(tmp_path, monkeypatch):
    monkeypatch.setattr(visual_forgetting, "run_seeds", refuse_to_train)
    monkeypatch.setattr(visual_forgetting, "run_in_processes", refuse_to_train)
    bundled = tmp_path / "trained_models" / "llava-vr-tiny-digit-grid"
    bundled.mkdir(parents=True)
    (bundled / "config.json").write_text("{}")
    args = visual_forgetting.parse_args(
        [
            "--preset",
            "smoke",
            "--seeds",
            "0",
            "--variants",
            "pool_vr_sela",
            "--output-dir",
            str(tmp_path / "runs"),
            "--save-best-to",
            str(bundled),
        ]
    )
    with pytest.raises(LlavaVRRefusal) as stopped:
        visual_forgetting.run(args)
    message = str(stopped.value)
    assert str(bundled) in message and "--overwrite" in message and "config.json" in message
    assert [p.name for p in bundled.iterdir()] == ["config.json"]


def test_experiment_refuses_to_train_a_finished_run_again_without_overwrite(tmp_path, monkeypatch):
    monkeypatch.setattr(visual_forgetting, "run_seeds", refuse_to_train)
    finished = tmp_path / "runs" / "pool_vr_sela-seed0"
    finished.mkdir(parents=True)
    (finished / "result.json").write_text("{}")
    args = visual_forgetting.parse_args(
        ["--preset", "smoke", "--seeds", "0", "1", "--variants", "pool_vr_sela", "--output-dir", str(tmp_path / "runs")]
    )
    with pytest.raises(LlavaVRRefusal, match=r"pool_vr_sela-seed0\. Pass --overwrite"):
        visual_forgetting.run(args)


def test_experiment_prints_its_plan_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(visual_forgetting, "run_seeds", refuse_to_train)
    args = visual_forgetting.parse_args(["--seeds", "0", "1", "--output-dir", str(tmp_path)])
    with pytest.raises(AssertionError, match="trained before"):
        visual_forgetting.run(args)
    printed = capsys.readouterr().out
    assert "plan: 6 runs (mlp, pool, pool_vr_sela x seeds 0, 1), preset 'cpu': 1500 steps" in printed
    assert re.search(r"about \d+ min in all", printed)


def test_tower_pretraining_runs_each_image_through_the_image_processor_once():
    """Each pretraining image is drawn about 4 times; processing it every time cost ~15 s at every run's start."""
    preset = PRESETS["smoke"]
    model, processor = build_model_and_processor("pool", preset, build_tokenizer(), 0)
    image_processor, processed = processor.image_processor, []

    def counting(images, **kwargs):
        processed.append(len(images))
        return image_processor(images, **kwargs)

    processor.image_processor = counting
    pretrain_tower(model, processor, preset, seed=0, steps=4, batch=8)
    assert sum(processed) == 4 * 8 // 4 + preset["tower_eval"]  # the training images once, then the held-out ones


@pytest.fixture(scope="module")
def bundled():
    model = AutoModelForImageTextToText.from_pretrained(BUNDLED, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(BUNDLED, trust_remote_code=True)
    experiment = json.loads((BUNDLED / "experiment.json").read_text())
    return model, processor, experiment


def test_bundled_model_is_a_small_complete_vision_remember_checkpoint(bundled):
    model, _, experiment = bundled
    size = sum(f.stat().st_size for f in BUNDLED.iterdir())
    assert size <= 30 * 2**20
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "processor_config.json",
        "README.md",
        "modeling_llava_vr.py",
        "chat_template.jinja",
    } <= {f.name for f in BUNDLED.iterdir()}
    assert model.config.projector_type == "adaptive_avg_pool" and model.config.vision_remember_layers
    assert experiment["best"]["variant"].startswith("pool_vr")
    assert f"exact match {experiment['best']['accuracy']:.3f}" in (BUNDLED / "README.md").read_text()


def test_bundled_model_reads_held_out_grids_as_accurately_as_measured(bundled):
    from datasets import Dataset

    model, processor, experiment = bundled
    best, preset = experiment["best"], experiment["preset"]
    samples = held_out_samples(preset, best["seed"], 24)
    chats = Dataset.from_list([s.to_chat(question_first=True) for s in samples])
    exact, digits, _ = evaluate(model, processor, chats)
    # 24 of the evaluation's own held-out images: within sampling noise of what the experiment measured on 500
    assert digits >= best["digit_accuracy"] - 0.1, (digits, best["digit_accuracy"])
    assert exact >= best["accuracy"] - 0.25 and exact > 0, (exact, best["accuracy"])


def load_quickstart():
    spec = importlib.util.spec_from_file_location("quickstart", REPO / "examples" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_answers_the_bundled_samples_through_pipeline(bundled):
    quickstart = load_quickstart()
    model, processor, _ = bundled
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        quickstart.main([])
    printed = stdout.getvalue()
    samples = json.loads((REPO / "examples" / "sample" / "questions.json").read_text())["samples"]
    assert printed.count("expected: ") == len(samples) >= 1
    assert "4 image tokens" not in printed and "5 image tokens (without compression: 17)" in printed
    assert "time to first token" in printed
    # what the pipeline printed equals plain greedy generation on the same image
    first = samples[0]
    from PIL import Image

    image = Image.open(REPO / "examples" / "sample" / first["image"]).convert("RGB")
    pipe = pipeline("image-text-to-text", model=model, processor=processor)
    messages = [
        {"role": "user", "content": [{"type": "text", "text": first["question"]}, {"type": "image", "image": image}]}
    ]
    answer = pipe(text=messages, return_full_text=False, generate_kwargs={"max_new_tokens": 40, "do_sample": False})
    assert f"answer:   {answer[0]['generated_text'].strip()}" in printed


REMOTE_READ = """
import json, sys
sys.modules["llava_vr"] = None  # the package must not be importable: the checkpoint's own code runs
from PIL import Image
from transformers import pipeline

folder, image, question = sys.argv[1:]
pipe = pipeline("image-text-to-text", model=folder, trust_remote_code=True)
messages = [{"role": "user", "content": [{"type": "text", "text": question},
                                         {"type": "image", "image": Image.open(image).convert("RGB")}]}]
answer = pipe(text=messages, return_full_text=False, generate_kwargs={"max_new_tokens": 40, "do_sample": False})
print(json.dumps({"answer": answer[0]["generated_text"].strip(), "model": type(pipe.model).__module__}))
"""


def test_bundled_model_reads_a_sample_through_its_own_code_without_the_package(tmp_path):
    import os
    import subprocess

    sample = json.loads((REPO / "examples" / "sample" / "questions.json").read_text())["samples"][0]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            REMOTE_READ,
            str(BUNDLED),
            str(REPO / "examples" / "sample" / sample["image"]),
            sample["question"],
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["model"].startswith("transformers_modules")
    assert report["answer"] == sample["answer"]


def test_save_best_copies_the_best_run_of_the_chosen_variant_only(tmp_path):
    output = tmp_path / "runs"
    visual_forgetting.run(
        visual_forgetting.parse_args(
            [
                "--preset",
                "smoke",
                "--seeds",
                "0",
                "--variants",
                "pool_vr_sela",
                "pool_vr_sela_v1",
                "--test-samples",
                "4",
                "--output-dir",
                str(output),
            ]
        )
    )
    for variant in ("pool_vr_sela_v1", "pool_vr_sela"):
        best = tmp_path / f"best-{variant}"
        visual_forgetting.run(
            visual_forgetting.parse_args(
                [
                    "--preset",
                    "smoke",
                    "--output-dir",
                    str(output),
                    "--summarize-only",
                    "--save-best-to",
                    str(best),
                    "--best-of",
                    variant,
                ]
            )
        )
        assert json.loads((best / "experiment.json").read_text())["best"]["variant"] == variant
        config = json.loads((best / "config.json").read_text())
        assert config["vision_remember_self_attention"] == (variant == "pool_vr_sela")


def test_summary_reports_mean_std_and_the_share_of_the_pooling_loss_recovered():
    from llava_vr.experiments.visual_forgetting_results import recovered_share, summarize

    def run(variant, seed, accuracy, digits):
        return dict(
            variant=variant, seed=seed, accuracy=accuracy, digit_accuracy=digits, image_tokens=5, train_seconds=1.0
        )

    results = [
        run("mlp", 0, 1.0, 1.0),
        run("mlp", 1, 0.9, 1.0),
        run("pool", 0, 0.1, 0.6),
        run("pool", 1, 0.1, 0.6),
        run("pool_vr_sela", 0, 0.8, 0.9),
        run("pool_vr_sela", 1, 0.6, 0.9),
    ]
    assert abs(recovered_share(results, "pool_vr_sela") - (0.7 - 0.1) / (0.95 - 0.1)) < 1e-12
    assert abs(recovered_share(results, "pool_vr_sela", "digit_accuracy") - 0.75) < 1e-12
    table = summarize(results)
    assert "| pool_vr_sela | 5 | 0, 1 | 0.700 ± 0.141 |" in table and "| 71 % / 75 % |" in table
    assert recovered_share(results[2:], "pool_vr_sela") is None  # no mlp run
