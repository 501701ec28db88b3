"""`llava-vr sft --load_in_4bit / --load_in_8bit --lora` (QLoRA, TRL's `ModelConfig` options) end to end on
bitsandbytes' CPU back end, its refusals, and the one LoRA merge: in float32 from the base checkpoint as saved, so the
merged checkpoint gives the adapter's logits whatever the run trained in (bf16 or 4-/8-bit)."""

import sys

import pytest
import torch
from safetensors import safe_open

pytest.importorskip("trl")
pytest.importorskip("peft")

from llava_vr.training import sft_cli  # noqa: E402
from llava_vr.training.sft_options import parse_args  # noqa: E402


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    """A tiny float32 LLaVA-VR checkpoint with its processor."""
    folder = tmp_path_factory.mktemp("base")
    model, processor = sft_cli.tiny_model_and_processor()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def lora_run(base, out, *extra):
    """A 1-step LoRA run of `llava-vr sft` on `base` into `out` (adapter at the top, merged checkpoint in merged/)."""
    args = parse_args(
        [
            "--model",
            str(base),
            "--lora",
            "--max_steps",
            "1",
            "--num_samples",
            "2",
            "--image_size",
            "56",
            "--per_device_train_batch_size",
            "2",
            "--save_steps",
            "1000",
            "--output_dir",
            str(out),
            *extra,
        ]
    )
    return sft_cli.run(*args)


def adapter_logits(base, adapter):
    """Logits of `PeftModel.from_pretrained(float32 base, adapter)` and of the merged checkpoint, on one image chat."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from llava_vr.data.synthetic_documents import synthetic_document_dataset

    processor = AutoProcessor.from_pretrained(base, trust_remote_code=True)
    row = synthetic_document_dataset(1, seed=5, size=56)[0]
    text = processor.apply_chat_template(row["messages"])
    inputs = processor(images=row["images"], text=[text], return_tensors="pt")
    model = AutoModelForImageTextToText.from_pretrained(base, trust_remote_code=True, dtype=torch.float32)
    with torch.no_grad():
        unmerged = PeftModel.from_pretrained(model, adapter).eval()(**inputs).logits
        merged_model = AutoModelForImageTextToText.from_pretrained(adapter / "merged", trust_remote_code=True).eval()
        merged = merged_model(**inputs).logits
    return unmerged, merged, merged_model


def saved_dtypes(folder):
    with safe_open(folder / "model.safetensors", "pt") as weights:
        return {weights.get_slice(name).get_dtype() for name in weights.keys()}


def lora_b_norm(folder):
    with safe_open(folder / "adapter_model.safetensors", "pt") as weights:
        return sum(float(weights.get_tensor(n).abs().sum()) for n in weights.keys() if ".lora_B." in n)


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_quantized_lora_run_trains_adapters_and_merges_into_the_float32_base(bits, base_checkpoint, tmp_path):
    """QLoRA on the CPU: the base loads quantized (bitsandbytes `Linear4bit` / `Linear8bitLt` in the LLM), TRL's bf16
    adapters train (LoRA B leaves zero), the fully trained VR / projector copies keep the base's float32 (TRL casts
    them to bf16, which failed with "mat1 and mat2 must have the same dtype"), and `merged/` is a float32 checkpoint
    that reproduces the adapter on the float32 base."""
    out = tmp_path / "run"
    trainer = lora_run(base_checkpoint, out, f"--load_in_{bits}")
    layer = trainer.model.base_model.model.model.language_model.layers[0].self_attn.q_proj.base_layer
    assert type(layer).__name__ == {"4bit": "Linear4bit", "8bit": "Linear8bitLt"}[bits]
    assert lora_b_norm(out) > 0
    assert saved_dtypes(out / "merged") == {"F32"}
    unmerged, merged, _ = adapter_logits(base_checkpoint, out)
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)


def test_bf16_lora_run_merges_in_the_base_dtype_and_reproduces_the_adapter_logits(base_checkpoint, tmp_path):
    """`--lora --bf16` trains on a bf16 copy of the base; the merged checkpoint is still float32 like the base (it
    was bf16 before, and matched the adapter only to ~0.1), as `--merge_adapter` writes it."""
    out = tmp_path / "run"
    lora_run(base_checkpoint, out, "--bf16")
    assert saved_dtypes(out / "merged") == {"F32"}
    unmerged, merged, merged_model = adapter_logits(base_checkpoint, out)
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert merged_model.dtype == torch.float32

    again = tmp_path / "merged-again"
    assert sft_cli.main(["--model", str(base_checkpoint), "--merge_adapter", str(out), "--output_dir", str(again)]) == 0
    with safe_open(out / "merged" / "model.safetensors", "pt") as a, safe_open(again / "model.safetensors", "pt") as b:
        assert all(torch.equal(a.get_tensor(name), b.get_tensor(name)) for name in a.keys())


def test_merge_adapter_refuses_an_output_folder_that_is_not_empty(base_checkpoint, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "model.safetensors").write_bytes(b"keep me")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    status = sft_cli.main(
        ["--model", str(base_checkpoint), "--merge_adapter", str(tmp_path / "adapter"), "--output_dir", str(taken)]
    )
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert f"error: --output_dir {taken} exists and is not empty" in err
    assert (taken / "model.safetensors").read_bytes() == b"keep me"


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_bitsandbytes_that_cannot_run_here_is_refused_in_one_line_before_loading(
    bits, base_checkpoint, tmp_path, capsys, monkeypatch
):
    """A bitsandbytes whose back end lacks the layer on this device (older releases had no CPU 4-bit), and one that
    is missing: exit status 2, one line naming the option, what failed and the fix; nothing written."""
    import bitsandbytes as bnb

    layer = {"4bit": "Linear4bit", "8bit": "Linear8bitLt"}[bits]

    def no_backend(*args, **kwargs):
        raise NotImplementedError(f"no {bits} kernel for the cpu in this build")

    monkeypatch.setattr(bnb.nn, layer, no_backend)
    argv = ["--model", str(base_checkpoint), "--lora", f"--load_in_{bits}", "--output_dir", str(tmp_path / "run")]
    assert sft_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: --load_in_{bits}: bitsandbytes {bnb.__version__} cannot run {bits} layers on the ")
    assert f"(NotImplementedError: no {bits} kernel for the cpu in this build)" in err
    assert f"drop --load_in_{bits}" in err

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # not installed
    assert sft_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --load_in_{bits} needs bitsandbytes, which cannot be imported")
    assert "pip install bitsandbytes" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "CKPT", "--load_in_4bit"], "--load_in_4bit loads a frozen quantized base: add --lora"),
        (
            ["--tiny", "--lora", "--load_in_8bit"],
            "--load_in_8bit quantizes a checkpoint while loading it: give --model",
        ),
        (["--model", "CKPT", "--lora", "--load_in_4bit", "--load_in_8bit"], "can't use 8 bit and 4 bit precision"),
        (
            ["--model", "CKPT", "--merge_adapter", "A", "--load_in_4bit"],
            "--merge_adapter loads the base in full precision",
        ),
    ],
)
def test_quantized_loading_options_that_cannot_work_are_parser_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err
