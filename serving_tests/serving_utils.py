# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Tiny LLaVA-VR checkpoints for vLLM, Transformers references, and the vLLM settings a CPU test run needs.

vLLM's CPU attention needs a head size of at least 32: the tiny text model here is 64 wide with 2 query heads (the
package's tiny default has 4). Everything runs in float32, where vLLM's greedy tokens equal Transformers'.
"""

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from llava_vr.testing_utils import build_tiny_tokenizer, tiny_config, tiny_model, tiny_processor, tiny_text_config

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "examples" / "trained_models" / "llava-vr-tiny-digit-grid"
SAMPLES = REPO / "examples" / "sample"

# what any CPU run of vLLM needs (see the README); nothing LLaVA-VR-specific
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
CPU_ENGINE_ARGS = dict(dtype="float32", enforce_eager=True, max_model_len=1024, max_num_seqs=8)


def set_cpu_env():
    for key, value in CPU_ENV.items():
        os.environ.setdefault(key, value)


def save_tiny_checkpoint(folder: Path, kind: str = "next", seed: int = 0, **overrides) -> Path:
    """A random tiny LLaVA-VR (VR perturbed away from the identity) with its processor, saved as Transformers saves
    it (`trust_remote_code` files included). `kind`: `"next"` = CLIP + LLaVA-NeXT image processor on 56-px tiles,
    `"onevision"` = SigLIP + LLaVA-OneVision image processor on 42-px tiles."""
    tokenizer = build_tiny_tokenizer()
    text_config = dict(tiny_text_config(vocab_size=len(tokenizer)), num_attention_heads=2, num_key_value_heads=1)
    config = tiny_config(
        "clip" if kind == "next" else "siglip",
        image_size=56 if kind == "next" else 42,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        **overrides,
    )
    model = tiny_model(config, seed=seed, perturb_vr=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.save_pretrained(folder)
    tiny_processor(config, kind).save_pretrained(folder)
    return folder


def random_image(height: int, width: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def chat_prompt(processor, question: str, num_images: int = 0, image_first: bool = False) -> str:
    images = [{"type": "image"}] * num_images
    text = [{"type": "text", "text": question}]
    content = images + text if image_first else text + images
    messages = [{"role": "user", "content": content if num_images else question}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def bundled_requests(processor) -> list[tuple[str, list]]:
    """The bundled checkpoint's three held-out samples (question, then image, as it was trained) and a text-only
    prompt."""
    samples = json.loads((SAMPLES / "questions.json").read_text())["samples"]
    requests = [
        (chat_prompt(processor, s["question"], 1), [Image.open(SAMPLES / s["image"]).convert("RGB")]) for s in samples
    ]
    return requests + [(chat_prompt(processor, "Read the grid."), [])]


def transformers_greedy(model_dir, requests, max_new_tokens: int) -> list[list[int]]:
    """Greedy new tokens of Transformers' `generate` (float32), one request at a time."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(model_dir, trust_remote_code=True, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    results = []
    for text, images in requests:
        inputs = processor(text=text, images=images or None, return_tensors="pt")
        with torch.inference_mode():
            output = model.eval().generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        results.append(output[0, inputs["input_ids"].shape[1] :].tolist())
    return results


def vllm_requests(requests) -> list[dict]:
    return [
        {"prompt": text, "multi_modal_data": {"image": images}} if images else {"prompt": text}
        for text, images in requests
    ]


def vllm_greedy(llm, requests, max_new_tokens: int) -> list[list[int]]:
    from vllm import SamplingParams

    outputs = llm.generate(
        vllm_requests(requests), SamplingParams(temperature=0, max_tokens=max_new_tokens), use_tqdm=False
    )
    return [list(o.outputs[0].token_ids) for o in outputs]


@contextmanager
def openai_server(arguments: list[str], log_path: Path, start_timeout: float = 420):
    """`python -m vllm.entrypoints.openai.api_server ARGUMENTS` on 127.0.0.1 (a free port) as the README runs it (no
    `VLLM_CPU_KVCACHE_SPACE`); yields its URL once `/health` answers, terminates it afterwards."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *arguments,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {**os.environ, **CPU_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    env.pop("VLLM_CPU_KVCACHE_SPACE")
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.time() + start_timeout
            while time.time() < deadline:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited with {process.returncode}, see {log_path}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(1)
            else:
                raise RuntimeError(f"the server did not start in time, see {log_path}")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
