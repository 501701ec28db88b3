# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Videos through vLLM (LLaVA-OneVision's layout, Vision Remember on each frame): greedy tokens equal Transformers'
(float32) for prompts with videos, images and text batched together; VR runs once per video at its prefill and on no
decode step; chunked prefill and prefix caching keep every video whole; bad video input is a `ValueError` and the
engine keeps serving.

Every engine runs with vLLM's defaults plus what a CPU run needs (`CPU_ENGINE_ARGS`).
"""

import gc

import pytest
import torch
from PIL import Image
from serving_utils import CPU_ENGINE_ARGS, random_image
from video_utils import (
    random_video,
    save_tiny_video_checkpoint,
    transformers_greedy,
    video_prompt,
    vllm_greedy,
)

LIMITS = {"image": 2, "video": 1}
LONG_TEXT = "The quick brown fox jumps over the lazy dog. Describe the image in detail. Which bar is the tallest? "


def _llm(model_dir, **kwargs):
    from vllm import LLM

    return LLM(
        model=str(model_dir), trust_remote_code=True, limit_mm_per_prompt=LIMITS, **{**CPU_ENGINE_ARGS, **kwargs}
    )


def _close(llm):
    del llm
    gc.collect()


def _frames(video):
    return [Image.fromarray(frame) for frame in video]


def _requests(processor):
    """Videos of several lengths and sizes (PIL frames or a `(T, H, W, 3)` array), a video beside an image, the same
    video in two prompts (vLLM's caches), text only."""
    short, wide = random_video(4, seed=1), random_video(6, 30, 70, seed=2)
    return [
        (video_prompt(processor, "Describe the video."), [], [short]),
        (video_prompt(processor, "What happens next?", images=1), [random_image(60, 100, seed=3)], [wide]),
        (video_prompt(processor, "Just text, please.", videos=0), [], []),
        (video_prompt(processor, "How many rows are there?"), [], [_frames(random_video(3, 50, 20, seed=4))]),
        (video_prompt(processor, "What is in row 1, column B?"), [], [short]),
        (video_prompt(processor, "Compare them.", images=2), [random_image(40, 40, seed=5)] * 2, [wide]),
    ]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_video_checkpoint(tmp_path_factory.mktemp("video"))


@pytest.fixture(scope="module")
def processor(checkpoint):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)


def _transformers_without_video_vision_remember(model_dir, requests):
    """Transformers' tokens with VR off for the videos only (`vision_remember_video=False`): what a server that
    skipped VR on video would answer."""
    from transformers import AutoConfig

    from llava_vr import LlavaVRForConditionalGeneration

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    config.vision_remember_video = False
    model = LlavaVRForConditionalGeneration.from_pretrained(model_dir, config=config, dtype=torch.float32)
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    outputs = []
    for text, images, videos in requests:
        inputs = processor(text=text, images=images or None, videos=videos or None, return_tensors="pt")
        with torch.inference_mode():
            generated = model.eval().generate(**inputs, max_new_tokens=10, do_sample=False)
        outputs.append(generated[0, inputs["input_ids"].shape[1] :].tolist())
    return outputs


def test_video_prompts_answer_as_transformers_with_vision_remember_once_per_video(
    checkpoint, processor, vision_remember_steps
):
    requests = _requests(processor)
    expected = transformers_greedy(checkpoint, requests, max_new_tokens=10)
    llm = _llm(checkpoint)
    vision_remember_steps.clear()  # the engine's start-up profiling
    got = vllm_greedy(llm, requests, max_new_tokens=10)
    _close(llm)
    assert got == expected
    # VR inputs were built once per image and once per video (no decode step, no second build for a video), some
    # steps holding several requests' items
    assert sum(vision_remember_steps) == sum(len(images) + len(videos) for _, images, videos in requests)
    assert max(vision_remember_steps) > 1
    # VR on video matters for these prompts: skipping it would change the answers to the video prompts
    skipped = _transformers_without_video_vision_remember(checkpoint, requests)
    assert [g != s for g, s in zip(got, skipped, strict=True)] == [bool(videos) for _, _, videos in requests]


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(dict(projector_type="adaptive_avg_pool", spatial_pool_stride=1), id="pool-stride1-sela"),
        pytest.param(dict(spatial_pool_stride=3, vision_remember_interaction="global"), id="mlp-stride3-global"),
        pytest.param(dict(vision_remember_video=False), id="vr-off-for-video"),
        pytest.param(dict(vision_remember_layers=[]), id="no-vr"),
    ],
)
def test_video_variant_matches_transformers(tmp_path, settings):
    from transformers import AutoProcessor

    folder = save_tiny_video_checkpoint(tmp_path / "model", seed=1, **settings)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    requests = _requests(processor)[:4]
    expected = transformers_greedy(folder, requests, max_new_tokens=8)
    llm = _llm(folder)
    got = vllm_greedy(llm, requests, max_new_tokens=8)
    _close(llm)
    assert got == expected


def _generate(llm, requests, max_new_tokens=10):
    from video_utils import vllm_requests
    from vllm import SamplingParams

    return llm.generate(
        vllm_requests(requests), SamplingParams(temperature=0, max_tokens=max_new_tokens), use_tqdm=False
    )


def _video_span(processor, text, video) -> tuple[int, int]:
    ids = processor(text=text, videos=[video], return_tensors="pt")["input_ids"][0]
    positions = (ids == processor.video_token_id).nonzero().flatten()
    return int(positions[0]), int(positions[-1]) + 1


def _text_video_text(processor, before: str, after: str) -> str:
    content = [{"type": "text", "text": before}, {"type": "video"}, {"type": "text", "text": after}]
    return processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )


def test_chunked_prefill_and_prefix_cache_keep_videos_whole(tmp_path, vision_remember_steps):
    """Stride 1 (9 tokens per frame): a 16-frame video takes 145 tokens, more than a 128-token KV block. A small step
    budget splits the prompts between steps, never inside a video; a prefix-cache hit that would end inside the video
    is cut back before it, one covering it is reused."""
    from transformers import AutoProcessor

    folder = save_tiny_video_checkpoint(tmp_path / "model", seed=2, spatial_pool_stride=1)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    video = random_video(16, seed=7)
    batch = [
        (video_prompt(processor, LONG_TEXT * (1 + i % 3) + f"Question {i}."), [], [random_video(16, seed=i)])
        for i in range(4)
    ]
    first = (_text_video_text(processor, LONG_TEXT * 2, LONG_TEXT + "What is the total?"), [], [video])
    other = (_text_video_text(processor, LONG_TEXT * 2, "How many rows are there?"), [], [video])
    start, end = _video_span(processor, first[0], video)
    assert start < 128 < end < 256  # the first KV block ends inside the video, the second after it
    expected = transformers_greedy(folder, [*batch, first, other], max_new_tokens=10)

    llm = _llm(folder, max_num_batched_tokens=400)
    vision_remember_steps.clear()
    outputs = _generate(llm, batch)
    assert all(len(o.prompt_token_ids) > 200 for o in outputs)  # 4 prompts > 400 tokens: split between steps
    assert [list(o.outputs[0].token_ids) for o in outputs] == expected[:4]
    assert sum(vision_remember_steps) == 4  # each video once, whole
    vision_remember_steps.clear()
    warm = _generate(llm, [first])[0]
    repeated, diverging = _generate(llm, [first, other])
    _close(llm)
    assert repeated.num_cached_tokens >= end  # the hit covers the whole video: reused, VR not re-run
    assert diverging.num_cached_tokens <= start  # the 128-token hit would end inside the video: cut back
    assert vision_remember_steps == [1, 1]  # the warm-up and the diverging prompt
    assert [list(o.outputs[0].token_ids) for o in (warm, repeated, diverging)] == [expected[4], *expected[4:]]


@pytest.fixture(scope="module")
def llm(checkpoint):
    engine = _llm(checkpoint, max_model_len=256)
    yield engine
    _close(engine)


@pytest.mark.parametrize(
    "case, prompt, video, message",
    [
        ("zero frames", "<video>", lambda: random_video(0), "no frames"),
        (
            "frames of different sizes",
            "<video>",
            lambda: [*_frames(random_video(2)), random_image(20, 20)],
            "different sizes",
        ),
        ("more frames than max_model_len holds", "<video>", lambda: random_video(80), "maximum model length"),
        ("a <video> typed beside a video", "<video> <video>", lambda: random_video(2), "video token"),
        ("a <video> typed without a video", "<video>", None, "video token"),
    ],
)
def test_bad_video_input_is_a_value_error_and_the_engine_keeps_serving(llm, processor, case, prompt, video, message):
    from vllm import SamplingParams
    from vllm.exceptions import VLLMClientError

    text = video_prompt(processor, "Describe it.", videos=0).replace("Describe it.", f"{prompt} Describe it.")
    request = {"prompt": text, "multi_modal_data": {"video": video()}} if video else {"prompt": text}
    with pytest.raises((ValueError, VLLMClientError), match=message):
        llm.generate([request], SamplingParams(temperature=0, max_tokens=4), use_tqdm=False)
    good = (video_prompt(processor, "Describe the video."), [], [random_video(4, seed=1)])
    assert vllm_greedy(llm, [good], max_new_tokens=4)[0] == transformers_greedy(llm_model_dir(llm), [good], 4)[0]


def llm_model_dir(llm) -> str:
    return llm.llm_engine.model_config.model


def _converted_llava_onevision(folder):
    """A tiny Transformers `LlavaOnevisionForConditionalGeneration` (SigLIP, `<video>` in its tokenizer, OneVision's
    image processor) converted by `llava-vr convert`, then every Vision Remember parameter moved off its init and
    saved again: the path a user takes from a OneVision checkpoint to a served LLaVA-VR."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from video_utils import SIGLIP_TILE, video_tokenizer

    from llava_vr import LlavaVRForConditionalGeneration, conversion
    from llava_vr.data.image_processors import anyres_image_processor
    from llava_vr.testing_utils import perturb_every_vision_remember_parameter, tiny_text_config, tiny_vision_config

    tokenizer = video_tokenizer()
    torch.manual_seed(5)
    text_config = dict(tiny_text_config(vocab_size=len(tokenizer)), num_attention_heads=2, num_key_value_heads=1)
    source = LlavaOnevisionForConditionalGeneration(
        LlavaOnevisionConfig(
            vision_config=tiny_vision_config("siglip", SIGLIP_TILE),
            text_config=text_config,
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
            image_grid_pinpoints=[[SIGLIP_TILE, SIGLIP_TILE], [SIGLIP_TILE, 2 * SIGLIP_TILE]],
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
        )
    )
    source.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    source.save_pretrained(folder / "source")
    tokenizer.save_pretrained(folder / "source")
    anyres_image_processor(
        "onevision", SIGLIP_TILE, source.config.image_grid_pinpoints, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(folder / "source")
    converted = folder / "converted"
    flags = ["--projector-type", "mlp", "--vision-remember-layers", "1", "4", "--vision-remember-feature-layers"]
    assert conversion.main(["--source", str(folder / "source"), "--output", str(converted), *flags, "1", "2", "3"]) == 0
    model = LlavaVRForConditionalGeneration.from_pretrained(converted, dtype=torch.float32)
    perturb_every_vision_remember_parameter(model, seed=1)
    model.save_pretrained(converted)
    return converted


def test_a_converted_llava_onevision_answers_about_videos_as_transformers_does(tmp_path):
    checkpoint = _converted_llava_onevision(tmp_path)
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    requests = [
        (video_prompt(processor, "Describe the video."), [], [random_video(4, seed=6)]),
        (
            video_prompt(processor, "And this one, with a picture?", images=1),
            [random_image(60, 100, seed=7)],
            [_frames(random_video(3, 50, 20, seed=8))],
        ),
    ]
    expected = transformers_greedy(checkpoint, requests, max_new_tokens=8)
    llm = _llm(checkpoint)
    got = vllm_greedy(llm, requests, max_new_tokens=8)
    _close(llm)
    assert got == expected
