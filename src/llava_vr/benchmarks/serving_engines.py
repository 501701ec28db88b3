# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The two engines of the serving benchmark, each run in a child process of its own on the same saved model and the
same requests: vLLM (`LLM.generate`, continuous batching) and Transformers `generate`.

A request is one chat prompt with one image; every request generates exactly `max_tokens` tokens (greedy, end of
sequence ignored). For `C` concurrent requests, all `C` are submitted at `t0`:
- throughput = `C * max_tokens / (time until the last request finished)`;
- TTFT = mean over the requests of `time of its first generated token - t0` (queueing included).
Transformers has no continuous batching; it is measured two ways: `sequential` (one `generate` per request, in turn:
how a Transformers server answers today) and `batched` (one `generate` over all `C` requests, left-padded).
"""

import os
import time

import torch


def request_messages(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def make_images(sizes: list[tuple[int, int]], seed: int = 0):
    """Random RGB images `(height, width)` (the weights are random too: content does not matter, pixels must)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


class _FirstTokenClock:
    """A `generate` streamer recording when the first generated token arrives (`put` #1 is the prompt)."""

    def __init__(self):
        self.calls, self.first_token_at = 0, None

    def put(self, value):
        self.calls += 1
        if self.calls == 2:
            self.first_token_at = time.perf_counter()

    def end(self):
        pass


def run_transformers(folder: str, question: str, image_sizes: list, concurrency: list[int], max_tokens: int,
                     threads: int, dtype: str) -> dict:
    """`{"sequential": {C: {...}}, "batched": {C: {...}}}` for Transformers `generate`."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.set_num_threads(threads)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True, dtype=getattr(torch, dtype))
    model.eval()
    prompt = processor.apply_chat_template(request_messages(question), add_generation_prompt=True)
    images = make_images(image_sizes)
    kwargs = dict(max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False)

    def generate(batch_images):
        inputs = processor(images=batch_images, text=[prompt] * len(batch_images), padding=True, return_tensors="pt")
        clock = _FirstTokenClock()
        with torch.inference_mode():
            model.generate(**inputs, **kwargs, streamer=clock)
        return clock.first_token_at

    generate(images[:1])  # warm-up
    results = {"sequential": {}, "batched": {}}
    for c in concurrency:
        t0 = time.perf_counter()
        firsts = [generate([image]) - t0 for image in images[:c]]
        results["sequential"][c] = _rates(c, max_tokens, time.perf_counter() - t0, firsts)
        t0 = time.perf_counter()
        first = generate(images[:c]) - t0
        results["batched"][c] = _rates(c, max_tokens, time.perf_counter() - t0, [first] * c)
    return results


def run_vllm(folder: str, question: str, image_sizes: list, concurrency: list[int], max_tokens: int,
             threads: int, dtype: str) -> dict:
    """`{"vllm": {C: {...}}}` for vLLM's offline engine (continuous batching, the model's enforced settings)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # else vLLM's CPU worker drops to one thread per process
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams

    torch.set_num_threads(threads)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    prompt = processor.apply_chat_template(request_messages(question), add_generation_prompt=True)
    llm = LLM(model=folder, trust_remote_code=True, dtype=dtype, max_model_len=4096, max_num_seqs=max(concurrency),
              enforce_eager=True, disable_log_stats=False, limit_mm_per_prompt={"image": 1}, seed=0)
    params = SamplingParams(max_tokens=max_tokens, min_tokens=max_tokens, ignore_eos=True, temperature=0.0,
                            detokenize=False)
    images = make_images(image_sizes)
    llm.generate([{"prompt": prompt, "multi_modal_data": {"image": images[0]}}], params, use_tqdm=False)  # warm-up
    results = {"vllm": {}}
    for c in concurrency:
        requests = [{"prompt": prompt, "multi_modal_data": {"image": image}} for image in images[:c]]
        t0 = time.perf_counter()
        outputs = llm.generate(requests, params, use_tqdm=False)
        elapsed = time.perf_counter() - t0
        if any(len(o.outputs[0].token_ids) != max_tokens for o in outputs):
            raise RuntimeError("vLLM returned a request with fewer tokens than asked")
        firsts = [o.metrics.first_token_latency for o in outputs if o.metrics is not None]
        results["vllm"][c] = _rates(c, max_tokens, elapsed, firsts or None)
    return results


def _rates(requests: int, max_tokens: int, elapsed: float, first_token_s: list[float] | None) -> dict:
    return {
        "requests": requests,
        "wall_s": elapsed,
        "output_tokens_per_s": requests * max_tokens / elapsed,
        "requests_per_s": requests / elapsed,
        "ttft_mean_s": None if not first_token_s else sum(first_token_s) / len(first_token_s),
        "ttft_max_s": None if not first_token_s else max(first_token_s),
    }


ENGINES = {"transformers": run_transformers, "vllm": run_vllm}

__all__ = ["ENGINES", "make_images", "request_messages", "run_transformers", "run_vllm"]
