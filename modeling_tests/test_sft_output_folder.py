"""The folder `llava-vr sft` leaves is publishable: weights, config, processor and remote code at its top level, and a
model card that names the real base model, the `image-text-to-text` pipeline and the run."""

import json

import pytest
from huggingface_hub import ModelCard

pytest.importorskip("trl")
pytest.importorskip("peft")

from llava_vr.training import sft_cli  # noqa: E402
from llava_vr.training.sft_options import parse_args  # noqa: E402

BASE = "lmms-lab/llava-onevision-qwen2-0.5b-ov"


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    """A tiny LLaVA-VR folder whose card says it was converted from BASE (as `llava-vr convert` writes it)."""
    folder = tmp_path_factory.mktemp("converted")
    model, processor = sft_cli.tiny_model_and_processor()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "README.md").write_text(f"---\nbase_model: {BASE}\nlicense: apache-2.0\n---\n\n# converted\n")
    return folder


def sft(*argv):
    return sft_cli.run(*parse_args([*argv, "--max_steps", "1", "--num_samples", "2", "--report_to", "none"]))


def card_of(folder):
    card = ModelCard.load(folder / "README.md")
    return card.data.to_dict(), card.text


def test_full_run_folder_has_weights_code_processor_and_a_card_naming_the_base_model(base_checkpoint, tmp_path):
    out = tmp_path / "stage2"
    sft("--model", str(base_checkpoint), "--output_dir", str(out), "--save_steps", "1")
    files = {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    code = {reference.split(".")[0] + ".py" for reference in config["auto_map"].values()}
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "README.md",
        *code,
    } <= files
    assert {p.name for p in base_checkpoint.glob("*.py")} <= files, "every remote-code file of the base"

    data, text = card_of(out)
    assert data["base_model"] == BASE and data["pipeline_tag"] == "image-text-to-text"
    assert data["license"] == "apache-2.0" and data["library_name"] == "transformers"
    assert {"llava-vr", "vision-remember", "sft"} <= set(data["tags"])
    assert f"fine-tuned from `{base_checkpoint}` (based on [{BASE}](https://huggingface.co/{BASE}))" in text
    assert 'model_id = "OWNER/NAME"' in text and "trust_remote_code=True" in text
    assert "None" not in text and "text-generation" not in text
    assert "| method | full fine-tuning of projector, vision_remember, llm, lm_head |" in text
    assert "| steps | 1 " in text
    # the card written with the checkpoint during training is this one too (TRL writes its own there otherwise)
    assert ModelCard.load(out / "README.md").data.pipeline_tag == "image-text-to-text"


def test_hub_model_id_and_base_model_options_go_into_the_card(base_checkpoint, tmp_path):
    out = tmp_path / "run"
    sft(
        "--model",
        str(base_checkpoint),
        "--output_dir",
        str(out),
        "--save_strategy",
        "no",
        "--hub_model_id",
        "me/llava-vr-docs",
        "--base_model",
        "me/llava-vr-0.5b",
    )
    data, text = card_of(out)
    assert data["base_model"] == "me/llava-vr-0.5b"
    assert text.startswith("\n# llava-vr-docs\n") or "# llava-vr-docs" in text.splitlines()[:3]
    assert 'model_id = "me/llava-vr-docs"' in text


def test_lora_run_writes_the_card_into_the_merged_checkpoint(base_checkpoint, tmp_path):
    out = tmp_path / "lora"
    sft("--model", str(base_checkpoint), "--lora", "--output_dir", str(out), "--save_strategy", "no")
    merged = out / "merged"
    assert {"model.safetensors", "config.json", "modeling_llava_vr.py", "processor_config.json", "README.md"} <= {
        p.name for p in merged.iterdir()
    }
    for folder in (out, merged):
        data, text = card_of(folder)
        assert data["base_model"] == BASE and data["pipeline_tag"] == "image-text-to-text"
        assert "| method | LoRA (r=" in text


def test_tiny_smoke_run_card_names_no_base_model(tmp_path):
    sft("--tiny", "--output_dir", str(tmp_path), "--save_strategy", "no")
    data, text = card_of(tmp_path)
    assert "base_model" not in data
    assert "fine-tuned from a tiny random LLaVA-VR (a smoke run)" in text and "None" not in text
