# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Videos through vLLM's OpenAI-compatible server: a `video_url` (a data URL of an mp4 or a GIF, decoded by vLLM's own
video loader) answers as Transformers does on the same frames; bad video requests are a 4xx naming the problem and
the server keeps answering.

The server runs as the README gives it, with `--limit-mm-per-prompt '{"image": 2, "video": 1}'`, on the tiny video
checkpoint (4 tokens per frame), every frame of a `video_url` kept (`--media-io-kwargs`; vLLM's default samples 32).
"""

import base64
import json

import httpx
import pytest
from serving_utils import openai_server
from video_utils import (
    gif_bytes,
    mp4_bytes,
    random_video,
    save_tiny_video_checkpoint,
    transformers_greedy,
    video_prompt,
)

MAX_TOKENS = 12


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_video_checkpoint(tmp_path_factory.mktemp("video-server"))


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    arguments = [
        "--model",
        str(checkpoint),
        "--trust-remote-code",
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "512",
        "--max-num-seqs",
        "8",
        "--limit-mm-per-prompt",
        json.dumps({"image": 2, "video": 1}),
        "--media-io-kwargs",
        json.dumps({"video": {"num_frames": -1}}),  # every frame (vLLM's default: 32 sampled uniformly)
    ]
    # a slow start (a loaded machine: the server, its engine core and their imports) is not a failure here
    with openai_server(arguments, tmp_path_factory.mktemp("server") / "server.log", start_timeout=900) as url:
        yield url


def _data_url(data: bytes, kind: str) -> str:
    return f"data:video/{kind};base64," + base64.b64encode(data).decode()


def _chat(url: str, model, question: str, video_urls=(), text=None, **extra) -> httpx.Response:
    videos = [{"type": "video_url", "video_url": {"url": u}} for u in video_urls]
    content = videos + [{"type": "text", "text": question}]
    body = {
        "model": str(model),
        "messages": [{"role": "user", "content": content if video_urls else (text or question)}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        **extra,
    }
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=180)


def _decoded_by_vllm(data: bytes):
    """The frames vLLM's own loader gives for the bytes (OpenCV, every frame as the server is set)."""
    from vllm.multimodal.media.image import ImageMediaIO
    from vllm.multimodal.media.video import VideoMediaIO

    frames, _ = VideoMediaIO(ImageMediaIO(), num_frames=-1).load_bytes(data).media
    return frames


def _expected(checkpoint, question: str, data: bytes) -> str:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    request = (video_prompt(processor, question), [], [_decoded_by_vllm(data)])
    tokens = transformers_greedy(checkpoint, [request], MAX_TOKENS)[0]
    return processor.tokenizer.decode(tokens, skip_special_tokens=True)


def _answer(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


@pytest.fixture(scope="module")
def sample(checkpoint):
    """(question, mp4 bytes, Transformers' answer on the frames vLLM decodes from them)."""
    data = mp4_bytes(random_video(10, 32, 48, seed=3))
    question = "Describe the video."
    return question, data, _expected(checkpoint, question, data)


def test_chat_request_with_a_video_url_answers_as_transformers(server, checkpoint, sample):
    question, data, expected = sample
    assert _answer(_chat(server, checkpoint, question, [_data_url(data, "mp4")])) == expected
    gif = gif_bytes(random_video(5, 32, 48, seed=4))
    assert _answer(_chat(server, checkpoint, question, [_data_url(gif, "gif")])) == _expected(checkpoint, question, gif)


@pytest.mark.parametrize(
    "case, urls, extra, message",
    [
        ("bytes that are not a video", lambda: [_data_url(b"not a video" * 20, "mp4")], {}, "Could not open video"),
        ("two videos, one allowed", lambda: [_data_url(mp4_bytes(random_video(3)), "mp4")] * 2, {}, "At most 1 video"),
        (
            "more frames than max_model_len holds",
            lambda: [_data_url(mp4_bytes(random_video(200, 16, 16)), "mp4")],  # 801 tokens
            {},
            "maximum context length",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_bad_video_request_is_a_4xx_naming_it_and_the_server_keeps_answering(
    server, checkpoint, sample, case, urls, extra, message
):
    question, data, expected = sample
    response = _chat(server, checkpoint, question, urls(), **extra)
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
    assert message in response.json()["error"]["message"], (case, response.text)
    assert _answer(_chat(server, checkpoint, question, [_data_url(data, "mp4")])) == expected


@pytest.mark.parametrize("with_video", [True, False], ids=["with a video", "text only"])
def test_a_video_token_typed_in_the_text_is_a_4xx(server, checkpoint, sample, with_video):
    question, data, expected = sample
    urls = [_data_url(data, "mp4")] if with_video else []
    response = _chat(server, checkpoint, "Describe <video> it.", urls)
    assert 400 <= response.status_code < 500, response.text
    assert "video token" in response.json()["error"]["message"]
    assert _answer(_chat(server, checkpoint, question, [_data_url(data, "mp4")])) == expected
