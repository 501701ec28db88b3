# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Continuous batching and prefix caching keep every image whole for Vision Remember.

The model here uses the `mlp` projector (no compression): its images take up to 120 tokens, so a small step budget
splits prompts across steps, and CPU's 128-token KV blocks end inside images.
"""

import gc

import pytest
from serving_utils import CPU_ENGINE_ARGS, chat_prompt, random_image, save_tiny_checkpoint, transformers_greedy

LONG_TEXT = "The quick brown fox jumps over the lazy dog. Describe the image in detail. Which bar is the tallest? "


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("mlp"), "next", seed=2, projector_type="mlp")


@pytest.fixture(scope="module")
def processor(checkpoint):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)


def _generate(llm, requests, max_new_tokens=10):
    from vllm import SamplingParams

    prompts = [{"prompt": t, "multi_modal_data": {"image": i}} if i else {"prompt": t} for t, i in requests]
    return llm.generate(prompts, SamplingParams(temperature=0, max_tokens=max_new_tokens), use_tqdm=False)


def _text_image_text(processor, before: str, after: str) -> str:
    content = [{"type": "text", "text": before}, {"type": "image"}, {"type": "text", "text": after}]
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _image_span(processor, text, images) -> tuple[int, int]:
    ids = processor(text=text, images=images, return_tensors="pt")["input_ids"][0]
    positions = (ids == processor.image_token_id).nonzero().flatten()
    return int(positions[0]), int(positions[-1]) + 1


def test_small_step_budget_batches_prefills_and_decodes_with_whole_images(checkpoint, processor, vision_remember_steps):
    from vllm import LLM

    sizes = [(112, 168), (60, 150), (120, 70), None, (112, 168), None, (90, 90), (60, 150)]
    requests = []
    for index, size in enumerate(sizes):
        text = LONG_TEXT * (1 + index % 3) + f"Question {index}."
        images = [random_image(*size, seed=index)] if size else []
        requests.append((chat_prompt(processor, text, len(images)), images))
    expected = transformers_greedy(checkpoint, requests, max_new_tokens=10)
    llm = LLM(model=str(checkpoint), trust_remote_code=True, **{**CPU_ENGINE_ARGS, "max_num_batched_tokens": 128})
    vision_remember_steps.clear()
    outputs = _generate(llm, requests)
    del llm
    gc.collect()
    assert all(len(o.prompt_token_ids) > 128 for o, (_, images) in zip(outputs, requests, strict=True) if images)
    assert [list(o.outputs[0].token_ids) for o in outputs] == expected
    assert sum(vision_remember_steps) == sum(len(images) for _, images in requests)  # each image once, whole


def test_prefix_cache_reuses_whole_images_and_never_ends_inside_one(checkpoint, processor, vision_remember_steps):
    from vllm import LLM

    image = random_image(112, 168, seed=7)
    first = (_text_image_text(processor, LONG_TEXT * 2, LONG_TEXT + "What is the total?"), [image])
    other = (_text_image_text(processor, LONG_TEXT * 2, "How many rows are there?"), [image])
    start, end = _image_span(processor, *first)
    assert start < 128 < end < 256 < len(processor(text=first[0], images=first[1])["input_ids"][0]) - 1
    # the first KV block ends inside the image, the second after it
    expected = transformers_greedy(checkpoint, [first, other], max_new_tokens=10)
    llm = LLM(model=str(checkpoint), trust_remote_code=True, **CPU_ENGINE_ARGS)
    vision_remember_steps.clear()
    warm = _generate(llm, [first])[0]
    repeated, diverging = _generate(llm, [first, other])
    del llm
    gc.collect()
    assert warm.num_cached_tokens == 0
    assert repeated.num_cached_tokens >= end  # the hit covers the whole image: reused, VR not re-run
    assert diverging.num_cached_tokens <= start  # the 128-token hit would end inside the image: cut back
    assert vision_remember_steps == [1, 1]  # the warm-up and the diverging prompt; the repeat reused the image
    assert [list(o.outputs[0].token_ids) for o in (warm, repeated, diverging)] == [expected[0], *expected]


def test_an_image_split_across_steps_raises_instead_of_answering(checkpoint, processor, monkeypatch):
    """Defence in depth: with LLaVA-VR's config hook removed (chunked prefill may then split an image), the model
    refuses the step rather than running Vision Remember on part of an image."""
    from vllm import LLM
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    from llava_vr.serving import vllm_plugin

    vllm_plugin.register()  # vLLM may not have loaded its plugins yet in this process
    monkeypatch.setattr(vllm_plugin, "register", lambda: None)
    monkeypatch.delitem(MODELS_CONFIG_MAP, vllm_plugin.ARCHITECTURE)
    llm = LLM(model=str(checkpoint), trust_remote_code=True, **{**CPU_ENGINE_ARGS, "max_num_batched_tokens": 64})
    request = (chat_prompt(processor, "Describe the image in detail.", 1), [random_image(112, 168, seed=1)])
    with pytest.raises(Exception, match="Vision Remember needs all of an image's tokens in one step"):
        _generate(llm, [request])
    del llm
    gc.collect()
