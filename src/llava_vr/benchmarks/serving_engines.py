# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The two engines of the serving benchmark, each run in a child process of its own on the same saved model and the
same requests: vLLM (`LLM.generate`, continuous batching) and Transformers `generate`.

A request is one chat prompt with one image; every request generates exactly `max_tokens` tokens (greedy, end of
sequence ignored). Every measurement uses images no earlier request has seen (`image_batches`): vLLM's prefix and
encoder caches never serve a measured request from the warm-up or another measurement. For `C` concurrent
requests, all `C` are submitted at `t0` (the single-request level is measured `rounds` times, medians reported):
- throughput = `C * max_tokens / (time until the last request finished)`;
- TTFT = mean over the requests of `time of its first generated token - t0` (queueing included).
Transformers has no continuous batching; it is measured two ways: `sequential` (one `generate` per request, in turn:
how a Transformers server answers today) and `batched` (one `generate` over all `C` requests, left-padded).
"""

import os
import statistics
import time

import torch


def request_messages(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def image_batches(size: tuple[int, int], concurrency: list[int], rounds: int = 1):
    """`(warm_up, {C: [images of each round]})`: one warm-up image, then per level `C` fresh random RGB images
    `(height, width)` per round (`rounds` rounds at `C = 1`, one otherwise), all different (the weights are random
    too: content does not matter, distinct pixels do); the same in every engine."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)

    def fresh(count):
        return [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(count)]

    warm_up = fresh(1)
    return warm_up, {c: [fresh(c) for _ in range(rounds if c == 1 else 1)] for c in concurrency}


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


def run_transformers(folder: str, question: str, image_size: tuple, concurrency: list[int], max_tokens: int,
                     threads: int, dtype: str, rounds: int = 1) -> dict:
    """`{"sequential": {C: {...}}, "batched": {C: {...}}}` for Transformers `generate`."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.set_num_threads(threads)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True, dtype=getattr(torch, dtype))
    model.eval()
    prompt = processor.apply_chat_template(request_messages(question), add_generation_prompt=True)
    warm_up, images = image_batches(image_size, concurrency, rounds)
    kwargs = dict(max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False)

    def generate(batch_images):
        inputs = processor(images=batch_images, text=[prompt] * len(batch_images), padding=True, return_tensors="pt")
        clock = _FirstTokenClock()
        with torch.inference_mode():
            model.generate(**inputs, **kwargs, streamer=clock)
        return clock.first_token_at

    def sequential(batch):
        t0 = time.perf_counter()
        firsts = [generate([image]) - t0 for image in batch]
        return _rates(len(batch), max_tokens, time.perf_counter() - t0, firsts)

    def batched(batch):
        t0 = time.perf_counter()
        first = generate(batch) - t0
        return _rates(len(batch), max_tokens, time.perf_counter() - t0, [first] * len(batch))

    generate(warm_up)
    return {
        "sequential": {c: _median([sequential(batch) for batch in images[c]]) for c in concurrency},
        "batched": {c: _median([batched(batch) for batch in images[c]]) for c in concurrency},
    }


def run_vllm(folder: str, question: str, image_size: tuple, concurrency: list[int], max_tokens: int,
             threads: int, dtype: str, rounds: int = 1, omp_bind: str = "auto") -> dict:
    """`{"vllm": {C: {...}}}` for vLLM's offline engine (continuous batching, the model's enforced settings).

    `omp_bind` is `VLLM_CPU_OMP_THREADS_BIND`: vLLM's default `auto` pins one thread per physical core and reserves
    a core for its scheduler (on a 2-core machine the model then computes on one core); `nobind` runs `threads`
    unpinned threads, as Transformers does."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = omp_bind
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from transformers import AutoConfig, AutoProcessor
    from vllm import LLM, SamplingParams

    torch.set_num_threads(threads)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    prompt = processor.apply_chat_template(request_messages(question), add_generation_prompt=True)
    max_len = min(4096, AutoConfig.from_pretrained(folder, trust_remote_code=True).text_config.max_position_embeddings)
    llm = LLM(model=folder, trust_remote_code=True, dtype=dtype, max_model_len=max_len, max_num_seqs=max(concurrency),
              enforce_eager=True, disable_log_stats=False, limit_mm_per_prompt={"image": 1}, seed=0)
    params = SamplingParams(max_tokens=max_tokens, min_tokens=max_tokens, ignore_eos=True, temperature=0.0,
                            detokenize=False)
    def measure(batch):
        requests = [{"prompt": prompt, "multi_modal_data": {"image": image}} for image in batch]
        t0 = time.perf_counter()
        outputs = llm.generate(requests, params, use_tqdm=False)
        elapsed = time.perf_counter() - t0
        if any(len(o.outputs[0].token_ids) != max_tokens for o in outputs):
            raise RuntimeError("vLLM returned a request with fewer tokens than asked")
        firsts = [o.metrics.first_token_latency for o in outputs if o.metrics is not None]
        return _rates(len(batch), max_tokens, elapsed, firsts or None)

    warm_up, images = image_batches(image_size, concurrency, rounds)
    measure(warm_up)
    return {"vllm": {c: _median([measure(batch) for batch in images[c]]) for c in concurrency}}


def _rates(requests: int, max_tokens: int, elapsed: float, first_token_s: list[float] | None) -> dict:
    return {
        "requests": requests,
        "wall_s": elapsed,
        "output_tokens_per_s": requests * max_tokens / elapsed,
        "requests_per_s": requests / elapsed,
        "ttft_mean_s": None if not first_token_s else sum(first_token_s) / len(first_token_s),
        "ttft_max_s": None if not first_token_s else max(first_token_s),
    }


def _median(rounds: list[dict]) -> dict:
    """Per key, the median over the rounds of one level (`None` stays `None`); `rounds` = how many."""
    merged = {key: None if rounds[0][key] is None else statistics.median(r[key] for r in rounds) for key in rounds[0]}
    return merged | {"rounds": len(rounds)}


ENGINES = {"transformers": run_transformers, "vllm": run_vllm}

__all__ = ["ENGINES", "image_batches", "request_messages", "run_transformers", "run_vllm"]
