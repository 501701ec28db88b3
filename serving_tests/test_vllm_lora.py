# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""LoRA adapters served by vLLM without merging: greedy tokens equal Transformers' PEFT model; adapters reaching
modules vLLM cannot adapt (Vision Remember, the vision tower, the projector) are refused with a message.

The adapter is what `llava-vr sft --lora` saves (`lora_config_for`: LoRA on the decoder layers, Vision Remember and
the projector trained fully as `modules_to_save`), with every LoRA B and every saved copy moved off its init.
"""

import gc
import json
import subprocess
import sys

import pytest
import torch
from serving_utils import (
    CPU_ENGINE_ARGS,
    chat_prompt,
    openai_server,
    random_image,
    save_tiny_checkpoint,
    transformers_greedy,
    vllm_requests,
)

from llava_vr.serving.lora_adapters import split_adapter, unreachable_lora_modules
from llava_vr.training.lora import lora_config_for

MAX_TOKENS = 10


def _peft_model(base_dir, **lora_kwargs):
    """PEFT model on the base checkpoint, every LoRA and saved-copy parameter moved off its init."""
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(base_dir, trust_remote_code=True, dtype=torch.float32)
    config = lora_kwargs.pop("config", None) or lora_config_for(base, r=4, alpha=8, dropout=0.0, **lora_kwargs)
    model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_" in name or ".modules_to_save." in name:
                parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def _greedy(model, processor, requests):
    tokens = []
    for text, images in requests:
        inputs = processor(text=text, images=images or None, return_tensors="pt")
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
        tokens.append(output[0, inputs["input_ids"].shape[1] :].tolist())
    return tokens


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("base"), "next", seed=3)


@pytest.fixture(scope="module")
def processor(checkpoint):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)


@pytest.fixture(scope="module")
def requests(processor):
    return [
        (chat_prompt(processor, "Describe the image.", 1), [random_image(60, 150, seed=1)]),
        (chat_prompt(processor, "Just text, please."), []),
        (chat_prompt(processor, "Compare two.", 2), [random_image(90, 90, seed=2), random_image(40, 100, seed=3)]),
    ]


@pytest.fixture(scope="module")
def sft_adapter(checkpoint, processor, requests, tmp_path_factory):
    """(adapter folder, PEFT greedy tokens, base greedy tokens) for an adapter as `llava-vr sft --lora` saves it."""
    model = _peft_model(checkpoint)
    folder = tmp_path_factory.mktemp("sft_adapter")
    model.save_pretrained(folder)
    with_adapter = _greedy(model, processor, requests)
    with model.disable_adapter():
        without = _greedy(model, processor, requests)
    return folder, with_adapter, without


def test_split_adapter_keeps_lora_apart_and_puts_full_copies_in_the_base(checkpoint, sft_adapter, tmp_path):
    from safetensors.torch import load_file

    adapter, _, _ = sft_adapter
    base_out, adapter_out = split_adapter(adapter, checkpoint, tmp_path / "served")
    original, served = load_file(checkpoint / "model.safetensors"), load_file(base_out / "model.safetensors")
    saved = load_file(adapter / "adapter_model.safetensors")
    lora = load_file(adapter_out / "adapter_model.safetensors")
    assert set(lora) == {k for k in saved if ".lora_" in k} and all(torch.equal(lora[k], saved[k]) for k in lora)
    changed = {k for k in original if not torch.equal(original[k], served[k])}
    copies = {k.removeprefix("base_model.model.") for k in saved if ".lora_" not in k}
    assert changed and changed <= copies  # every moved copy replaced its original, nothing else changed
    assert any(".vision_remember." in k for k in changed) and any("multi_modal_projector" in k for k in changed)
    assert json.loads((adapter_out / "adapter_config.json").read_text())["modules_to_save"] is None
    with pytest.raises(ValueError, match="exists"):
        split_adapter(adapter, checkpoint, tmp_path / "served")


def test_a_refused_split_leaves_no_output_folder_so_a_rerun_is_not_refused_as_existing(tmp_path):
    from safetensors.torch import save_file

    base, adapter, output = tmp_path / "base", tmp_path / "adapter", tmp_path / "served"
    base.mkdir(), adapter.mkdir()
    (base / "config.json").write_text("{}")
    save_file({"model.multi_modal_projector.linear_1.weight": torch.zeros(4, 4)}, base / "model.safetensors")
    (adapter / "adapter_config.json").write_text(json.dumps({"modules_to_save": ["multi_modal_projector"]}))
    lora = "base_model.model.model.language_model.layers.0.self_attn.q_proj"
    tensors = {f"{lora}.lora_A.weight": torch.zeros(2, 4), f"{lora}.lora_B.weight": torch.zeros(4, 2)}
    tensors["base_model.model.model.multi_modal_projector.linear_1.weight"] = torch.zeros(3, 4)  # another base's
    save_file(tensors, adapter / "adapter_model.safetensors")
    for _ in range(2):  # refused for its reason both times, never for a folder the first refusal left
        with pytest.raises(ValueError, match=r"copy is \(3, 4\), the base's \(4, 4\)"):
            split_adapter(adapter, base, output)
        assert not output.exists()


def test_unreachable_lora_modules_names_vision_remember_tower_and_projector():
    names = [
        "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.language_model.layers.3.mlp.down_proj.lora_B.weight",
        "base_model.model.model.language_model.vision_remember.1.cross_attention.k_proj.lora_A.weight",
        "base_model.model.model.vision_tower.encoder.layers.0.self_attn.q_proj.lora_B.weight",
        "base_model.model.model.multi_modal_projector.linear_1.lora_A.weight",
        "base_model.model.lm_head.lora_A.weight",
        "base_model.model.model.language_model.vision_remember.1.expand_in.weight",  # a full copy, not LoRA
    ]
    assert unreachable_lora_modules(names) == {
        "lm_head": "lm_head",
        "model.language_model.vision_remember.1.cross_attention.k_proj": "Vision Remember",
        "model.multi_modal_projector.linear_1": "the projector",
        "model.vision_tower.encoder.layers.0.self_attn.q_proj": "the vision tower",
    }


@pytest.fixture(scope="module")
def served(checkpoint, sft_adapter, tmp_path_factory):
    """vLLM on the split base with LoRA enabled; the split adapter folder."""
    from vllm import LLM

    adapter, _, _ = sft_adapter
    base_out, adapter_out = split_adapter(adapter, checkpoint, tmp_path_factory.mktemp("split") / "served")
    llm = LLM(
        model=str(base_out), trust_remote_code=True, enable_lora=True, max_lora_rank=8, max_loras=2, **CPU_ENGINE_ARGS
    )
    yield llm, base_out, adapter_out
    del llm
    gc.collect()


def test_sft_adapter_served_without_merging_matches_transformers_peft(served, sft_adapter, requests, processor):
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    llm, base_out, adapter_out = served
    _, peft_tokens, base_tokens = sft_adapter
    lora = LoRARequest("sft", 1, str(adapter_out))
    prompts = vllm_requests(requests)
    # with and without the adapter in one batch; without it, the served base is the base with the adapter's copies
    outputs = llm.generate(
        prompts + prompts,
        SamplingParams(temperature=0, max_tokens=MAX_TOKENS),
        lora_request=[lora] * len(prompts) + [None] * len(prompts),
        use_tqdm=False,
    )
    got = [list(o.outputs[0].token_ids) for o in outputs]
    assert got[: len(prompts)] == peft_tokens
    assert got[len(prompts) :] == transformers_greedy(base_out, requests, MAX_TOKENS)
    assert peft_tokens != base_tokens  # the adapter matters for these prompts


@pytest.mark.parametrize(
    "targets, part",
    [
        (["q_proj", "v_proj"], "Vision Remember"),  # suffixes of the decoder's, VR's and the tower's projections
        (r".*vision_tower.*\.(q_proj|k_proj)", "the vision tower"),
        (r".*multi_modal_projector\.linear_1", "the projector"),
    ],
)
def test_adapter_reaching_modules_vllm_cannot_adapt_is_refused(served, checkpoint, tmp_path, targets, part):
    from peft import LoraConfig
    from vllm.lora.request import LoRARequest

    llm, _, _ = served
    model = _peft_model(checkpoint, config=LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(Exception, match=f"LoRA weights on .*{part}.*would be silently ignored"):
        llm.llm_engine.add_lora(LoRARequest("bad", 7, str(tmp_path / "adapter")))


def test_adapter_check_command_says_what_to_do(sft_adapter, tmp_path, checkpoint):
    adapter, _, _ = sft_adapter
    command = [sys.executable, "-m", "llava_vr.serving.lora_adapters"]
    result = subprocess.run(command + ["check", str(adapter)], capture_output=True, text=True)
    assert result.returncode == 2 and "`split` it first" in result.stderr, result.stderr
    result = subprocess.run(
        command + ["split", str(adapter), str(checkpoint), str(tmp_path / "out")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    result = subprocess.run(command + ["check", str(tmp_path / "out" / "adapter")], capture_output=True, text=True)
    assert result.returncode == 0 and "can serve it as it is" in result.stdout, result.stderr


def test_server_with_lora_modules_answers_as_transformers_peft(checkpoint, sft_adapter, requests, tmp_path):
    """`--enable-lora --lora-modules NAME=PATH`: requests naming the adapter get PEFT's answer, others the base's."""
    import base64
    import io

    import httpx

    adapter, peft_tokens, _ = sft_adapter
    base_out, adapter_out = split_adapter(adapter, checkpoint, tmp_path / "served")
    arguments = [
        "--model",
        str(base_out),
        "--trust-remote-code",
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "1024",
        "--enable-lora",
        "--max-lora-rank",
        "8",
        "--lora-modules",
        f"sft={adapter_out}",
    ]
    (text_with_image, [image]), (text_only, _) = requests[0], requests[1]
    png = io.BytesIO()
    image.save(png, "PNG")
    image_url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    question = "Describe the image."
    assert question in text_with_image
    expected_base = transformers_greedy(base_out, requests[:2], MAX_TOKENS)
    with openai_server(arguments, tmp_path / "server.log") as url:
        for model, tokens in (("sft", peft_tokens), (str(base_out), expected_base)):
            content = [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": image_url}}]
            body = {
                "model": model,
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
                "return_token_ids": True,
                "messages": [{"role": "user", "content": content}],
            }
            response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["token_ids"] == tokens[0], model
            body = {
                "model": model,
                "prompt": text_only,
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
                "return_token_ids": True,
            }
            response = httpx.post(f"{url}/v1/completions", json=body, timeout=300)
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["token_ids"] == tokens[1], model
