# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""vLLM's greedy tokens equal Transformers' (float32) for LLaVA-VR, prompts with and without images batched together.

Every engine here runs with vLLM's defaults plus what a CPU run needs (`CPU_ENGINE_ARGS`): chunked prefill and
prefix caching stay on, LLaVA-VR sets what it needs itself.
"""

import gc
import json

import pytest
import torch
from serving_utils import (
    BUNDLED,
    CPU_ENGINE_ARGS,
    SAMPLES,
    bundled_requests,
    chat_prompt,
    random_image,
    save_tiny_checkpoint,
    transformers_greedy,
    vllm_greedy,
)

from llava_vr.projectors_llava_vr import PROJECTOR_CLASSES
from llava_vr.registries_llava_vr import PROJECTORS, VR_INTERACTIONS


def _llm(model_dir, **kwargs):
    from vllm import LLM

    return LLM(model=str(model_dir), trust_remote_code=True, **{**CPU_ENGINE_ARGS, **kwargs})


def _close(llm):
    del llm
    gc.collect()


def _requests(processor):
    """Lone images tiled with AnyRes (wide, tall, unpadded), text only, and two-image prompts (base tile per image).
    The same pictures come back in other contexts: alone, then beside another (vLLM caches processed images and
    encoder outputs per image, and must not mix the two); and a new image beside one already processed."""
    wide, tall, square = random_image(60, 150, seed=1), random_image(120, 70, seed=2), random_image(90, 90, seed=3)
    return [
        (chat_prompt(processor, "Describe the image in detail.", 1), [wide]),
        (chat_prompt(processor, "What is in row 1, column B?", 1, image_first=True), [tall]),
        (chat_prompt(processor, "Compare the two images.", 2), [wide, square]),
        (chat_prompt(processor, "Just text, please."), []),
        (chat_prompt(processor, "Which bar is the tallest?", 1), [random_image(112, 168, seed=4)]),
        (chat_prompt(processor, "Same? Different?", 2), [random_image(100, 40, seed=5), square]),
    ]


def test_bundled_checkpoint_answers_its_samples_as_transformers_does():
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(BUNDLED, trust_remote_code=True)
    requests = bundled_requests(processor)
    expected = transformers_greedy(BUNDLED, requests, max_new_tokens=40)
    llm = _llm(BUNDLED, max_model_len=256)
    got = vllm_greedy(llm, requests, max_new_tokens=40)
    answers = [llm.get_tokenizer().decode(tokens, skip_special_tokens=True) for tokens in got]
    _close(llm)
    assert got == expected
    samples = json.loads((SAMPLES / "questions.json").read_text())["samples"]
    assert answers[:3] == [s["answer"] for s in samples]


@pytest.fixture(scope="module")
def anyres_checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("anyres"), "next")


def _without_vision_remember(model_dir, requests):
    """Transformers' tokens with the VR modules' output zeroed: what a server that skipped VR would answer."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(model_dir, trust_remote_code=True, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    for module in model.model.language_model.vision_remember.values():
        torch.nn.init.zeros_(module.output_proj.weight)
        torch.nn.init.zeros_(module.output_proj.bias)
    outputs = []
    for text, images in requests:
        inputs = processor(text=text, images=images or None, return_tensors="pt")
        with torch.inference_mode():
            generated = model.generate(**inputs, max_new_tokens=12, do_sample=False)
        outputs.append(generated[0, inputs["input_ids"].shape[1] :].tolist())
    return outputs


def test_anyres_model_with_trained_vision_remember_matches_transformers(anyres_checkpoint, vision_remember_steps):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(anyres_checkpoint, trust_remote_code=True)
    extreme = [
        (chat_prompt(processor, "Describe the image.", 1), [random_image(*size, seed=6)])
        for size in [(1, 900), (900, 1), (1, 1)]
    ]  # unpadding keeps no crop row / column; one pixel
    requests = _requests(processor) + extreme
    expected = transformers_greedy(anyres_checkpoint, requests, max_new_tokens=12)
    llm = _llm(anyres_checkpoint)
    vision_remember_steps.clear()  # the engine's start-up profiling
    got = vllm_greedy(llm, requests, max_new_tokens=12)
    _close(llm)
    assert got == expected
    # VR ran once per image, over images of several requests in one step, and on no decode step
    assert sum(vision_remember_steps) == sum(len(images) for _, images in requests)
    assert max(vision_remember_steps) > 2
    # VR matters for these prompts: skipping it would change the answers to the image prompts
    skipped = _without_vision_remember(anyres_checkpoint, requests[:6])
    assert [g != s for g, s in zip(got[:6], skipped, strict=True)] == [True, True, True, False, True, True]


def _variants():
    """Every projector and every VR interaction, both towers (CLIP with LLaVA-NeXT's image processor, SigLIP with
    OneVision's), the other layouts (`anyres_max_N` down-interpolation, `pad`, `multi_image_anyres`), saliency off with
    wider SELA windows, and a model without VR."""
    interactions = list(VR_INTERACTIONS)
    extras = [
        dict(vision_aspect_ratio="anyres_max_2"),
        dict(vision_aspect_ratio="pad"),
        dict(multi_image_anyres=True),
        dict(vision_remember_saliency="off", vision_remember_window_size=3, vision_remember_window_layout="centred"),
        dict(vision_remember_layers=[]),  # plain pooled LLaVA: no VR inputs travel
    ]
    variants = []
    for index, projector in enumerate(PROJECTORS):
        kind = ("next", "onevision")[index % 2]
        settings = dict(projector_type=projector, vision_remember_interaction=interactions[index % len(interactions)])
        if not PROJECTOR_CLASSES[projector].tokens_at_grid_cells:  # selected patches: no VR partner (refused)
            settings["vision_remember_layers"] = []
        variants.append(pytest.param(kind, {**settings, **extras[index % len(extras)]}, id=f"{kind}-{projector}"))
    return variants


@pytest.mark.parametrize("kind, settings", _variants())
def test_variant_matches_transformers(tmp_path, kind, settings):
    from transformers import AutoProcessor

    folder = save_tiny_checkpoint(tmp_path / "model", kind, seed=1, **settings)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    requests = _requests(processor)
    expected = transformers_greedy(folder, requests, max_new_tokens=8)
    llm = _llm(folder)
    got = vllm_greedy(llm, requests, max_new_tokens=8)
    _close(llm)
    assert got == expected
