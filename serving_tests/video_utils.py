# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Tiny LLaVA-VR checkpoints that take videos, video inputs and Transformers references for the vLLM video tests.

The tiny tokenizer gets `<video>` as a special token (its last id) and the config its id; the text model is 64 wide
with 2 query heads (vLLM's CPU attention needs a head size of at least 32). SigLIP on 42-px tiles (3 x 3 patches) with
LLaVA-OneVision's image processor, the `mlp` projector by default: 9 tokens per frame, 2 x 2 = 4 after the 2x2
pooling, so a video of T frames takes 4 T + 1 tokens.
"""

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from llava_vr import LlavaVRProcessor
from llava_vr.data.image_processors import anyres_image_processor
from llava_vr.testing_utils import build_tiny_tokenizer, tiny_config, tiny_model, tiny_text_config

SIGLIP_TILE = 42


def video_tokenizer():
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<video>"]})
    return tokenizer


def save_tiny_video_checkpoint(folder: Path, seed: int = 0, **overrides) -> Path:
    """A random tiny LLaVA-VR that takes videos (VR perturbed away from the identity), with its processor, saved as
    Transformers saves it."""
    tokenizer = video_tokenizer()
    text_config = dict(tiny_text_config(vocab_size=len(tokenizer)), num_attention_heads=2, num_key_value_heads=1)
    settings = {"projector_type": "mlp", **overrides}
    config = tiny_config(
        "siglip",
        image_size=SIGLIP_TILE,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        **settings,
    )
    model = tiny_model(config, seed=seed, perturb_vr=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.save_pretrained(folder)
    image_processor = anyres_image_processor("onevision", SIGLIP_TILE, config.image_grid_pinpoints)
    LlavaVRProcessor.from_model_config(config, image_processor, tokenizer).save_pretrained(folder)
    return folder


def random_video(frames: int, height: int = 30, width: int = 40, seed: int = 0) -> np.ndarray:
    """`(frames, height, width, 3)` uint8 noise."""
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def video_prompt(processor, question: str, videos: int = 1, images: int = 0) -> str:
    """A one-turn chat: `images` images, then `videos` videos, then the question."""
    content = [{"type": "image"}] * images + [{"type": "video"}] * videos + [{"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def transformers_greedy(model_dir, requests, max_new_tokens: int) -> list[list[int]]:
    """Greedy new tokens of Transformers' `generate` (float32), one `(text, images, videos)` request at a time."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(model_dir, trust_remote_code=True, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    results = []
    for text, images, videos in requests:
        inputs = processor(text=text, images=images or None, videos=videos or None, return_tensors="pt")
        with torch.inference_mode():
            output = model.eval().generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        results.append(output[0, inputs["input_ids"].shape[1] :].tolist())
    return results


def vllm_requests(requests) -> list[dict]:
    out = []
    for text, images, videos in requests:
        data = {**({"image": images} if images else {}), **({"video": videos} if videos else {})}
        out.append({"prompt": text, "multi_modal_data": data} if data else {"prompt": text})
    return out


def vllm_greedy(llm, requests, max_new_tokens: int) -> list[list[int]]:
    from vllm import SamplingParams

    outputs = llm.generate(
        vllm_requests(requests), SamplingParams(temperature=0, max_tokens=max_new_tokens), use_tqdm=False
    )
    return [list(o.outputs[0].token_ids) for o in outputs]


def gif_bytes(frames: np.ndarray, duration_ms: int = 100) -> bytes:
    """An animated GIF of the frames (PIL; palette-quantised, so decode it before comparing pixels)."""
    buffer = io.BytesIO()
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return buffer.getvalue()


def mp4_bytes(frames: np.ndarray, fps: float = 4.0, path: Path | None = None) -> bytes:
    """An mp4 (OpenCV's `mp4v`) of the frames, RGB in."""
    import tempfile

    import cv2

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "video.mp4"
        height, width = frames.shape[1:3]
        writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
        writer.release()
        return target.read_bytes()
