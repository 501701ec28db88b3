"""LLaVA-VR model: shapes and counts, Vision Remember behaviour, generation, bad input."""

import copy

import pytest
import torch

from llava_vr import LlavaVRForConditionalGeneration, LlavaVRModel
from llava_vr.packing_llava_vr import anyres_layout, grid_pinpoints, pack_tile_tokens, packed_token_cells
from llava_vr.projectors_llava_vr import PROJECTOR_CLASSES
from llava_vr.registries_llava_vr import PROJECTORS, VR_INTERACTIONS
from llava_vr.testing_utils import IMAGE_TOKEN_ID, image_inputs, left_pad, tiny_config, tiny_model
from llava_vr.vision_remember_llava_vr import VisionRemember, VisionRememberFeatures

INTERACTIONS = list(VR_INTERACTIONS)
SIZES = [(60, 100), (120, 40), (56, 56), (30, 170)]


@pytest.mark.parametrize("projector", list(PROJECTORS))
def test_projector_tokens_per_tile_and_scattered_count_match_layout(projector):
    vr = {} if PROJECTOR_CLASSES[projector].tokens_at_grid_cells else dict(vision_remember_layers=[])
    model = tiny_model(projector_type=projector, **vr)
    expected_grid = 4 if projector == "mlp" else 2
    assert model.config.token_grid_size == expected_grid
    inputs, ids = image_inputs(model, SIZES)
    features = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
    for packed, size, sample in zip(features.pooler_output, SIZES, ids, strict=True):
        layout = anyres_layout(size, model.config.image_grid_pinpoints, 56, expected_grid, "anyres_max_9")
        assert packed.shape == (layout.num_tokens, model.config.text_config.hidden_size)
        assert int((sample == IMAGE_TOKEN_ID).sum()) == layout.num_tokens
    logits = model(**inputs).logits
    assert logits.shape == (*inputs["input_ids"].shape, model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()


def test_real_size_token_counts_are_576_and_144_per_tile():
    pinpoints = grid_pinpoints(336, 3, 3)
    mlp = anyres_layout((336, 336), pinpoints, 336, 24, "anyres", use_anyres=False)
    pooled = anyres_layout((336, 336), pinpoints, 336, 12, "anyres", use_anyres=False)
    assert (mlp.num_tokens, pooled.num_tokens) == (576 + 1, 144 + 1)
    full = anyres_layout((672, 672), pinpoints, 336, 12, "anyres")
    assert full.num_tiles == 5 and full.num_tokens == 144 + 24 * 25


@pytest.mark.parametrize("interaction", INTERACTIONS)
@pytest.mark.parametrize("projector", ["mlp", "adaptive_avg_pool"])
def test_fresh_vision_remember_is_identity(projector, interaction):
    config = tiny_config(projector_type=projector, vision_remember_interaction=interaction)
    with_vr = tiny_model(config)
    without_vr = tiny_model(tiny_config(projector_type=projector, vision_remember_layers=[]))
    missing, unexpected = without_vr.load_state_dict(with_vr.state_dict(), strict=False)
    assert not missing and all("vision_remember" in key for key in unexpected)
    inputs, _ = image_inputs(with_vr, SIZES[:2])
    torch.testing.assert_close(with_vr(**inputs).logits, without_vr(**inputs).logits, rtol=0, atol=0)


@pytest.mark.parametrize("interaction", INTERACTIONS)
def test_vision_remember_changes_vision_rows_only(interaction):
    model = tiny_model(perturb_vr=True, vision_remember_interaction=interaction)
    inputs, _ = image_inputs(model, SIZES[:2])
    features = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
    mask = inputs["input_ids"] == IMAGE_TOKEN_ID
    vr_inputs = VisionRemember.prepare_inputs(mask, features.vision_remember_features, model.config)
    hidden = torch.randn(*inputs["input_ids"].shape, model.config.text_config.hidden_size)
    out = model.model.language_model.vision_remember["1"](hidden, vr_inputs)
    changed = (out != hidden).any(-1)
    newline = torch.zeros_like(mask)
    newline_cells = torch.cat(features.vision_remember_features.token_cells)[:, 0] < 0
    newline.view(-1)[mask.view(-1).nonzero().squeeze(1)[newline_cells]] = True
    assert not changed[~mask].any(), "text rows must pass through"
    assert not changed[newline].any(), "newline rows must pass through"
    assert changed[mask & ~newline].all(), "every vision row must be rewritten"


@pytest.mark.parametrize("interaction", INTERACTIONS)
def test_gradients_reach_every_vision_remember_parameter_and_none_reach_frozen_tower(interaction):
    model = tiny_model(perturb_vr=True, vision_remember_interaction=interaction).train()
    model.model.vision_tower.requires_grad_(False)
    inputs, _ = image_inputs(model, SIZES[:2])
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    for name, param in model.model.language_model.vision_remember.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.model.vision_tower.parameters())
    assert model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients():
    inputs, _ = image_inputs(tiny_model(), SIZES[:2])
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(perturb_vr=True).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.model.language_model.vision_remember["1"].gradient_checkpointing
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("interaction", INTERACTIONS)
def test_greedy_generation_same_with_and_without_cache(interaction):
    model = tiny_model(perturb_vr=True, vision_remember_interaction=interaction)
    inputs, _ = image_inputs(model, SIZES[:3])
    cached = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    uncached = model.generate(**inputs, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_vision_remember_runs_at_prefill_and_is_skipped_on_decode_steps():
    model = tiny_model(perturb_vr=True)
    calls = []
    model.model.language_model.vision_remember["1"].register_forward_hook(lambda m, a, o: calls.append(a[0].shape))
    inputs, _ = image_inputs(model, SIZES[:1])
    model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert calls == [torch.Size((1, inputs["input_ids"].shape[1], 64))]


def test_left_padded_batch_of_different_sizes_matches_each_sample_alone(model):
    inputs, ids = image_inputs(model, SIZES)
    batch_logits = model(**inputs).logits
    for row, (sample, size) in enumerate(zip(ids, SIZES[: len(ids)], strict=True)):
        tiles = model.model.image_layouts(torch.tensor([size]))[0].num_tiles
        alone = model(
            input_ids=sample[None],
            pixel_values=inputs["pixel_values"][row : row + 1, :tiles],
            image_sizes=torch.tensor([size]),
        ).logits[0]
        torch.testing.assert_close(batch_logits[row, -len(sample) :], alone, rtol=1e-4, atol=1e-5)
    batch_generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)[:, -4:]
    for row, (sample, size) in enumerate(zip(ids, SIZES[: len(ids)], strict=True)):
        alone = model.generate(
            input_ids=sample[None],
            pixel_values=inputs["pixel_values"][row : row + 1],
            image_sizes=torch.tensor([size]),
            max_new_tokens=4,
            do_sample=False,
        )[0, -4:]
        assert torch.equal(batch_generated[row], alone)


def test_several_images_in_one_prompt_use_base_tile_and_beam_search_works(model):
    sizes = torch.tensor([[60, 100], [120, 40]])
    layouts = model.model.image_layouts(sizes, batch_num_images=[2])
    assert [lay.num_tiles for lay in layouts] == [1, 1] and [lay.num_tokens for lay in layouts] == [5, 5]
    ids = torch.tensor([[1, *[IMAGE_TOKEN_ID] * 5, 2, *[IMAGE_TOKEN_ID] * 5, 3]])
    pixel_values = torch.randn(2, 1, 3, 56, 56)
    kwargs = dict(input_ids=ids, pixel_values=pixel_values, image_sizes=sizes, batch_num_images=torch.tensor([2]))
    assert torch.isfinite(model(**kwargs).logits).all()
    greedy = model.generate(**kwargs, max_new_tokens=4, do_sample=False)
    beams = model.generate(**kwargs, max_new_tokens=4, do_sample=False, num_beams=2, num_return_sequences=2)
    assert greedy.shape == (1, ids.shape[1] + 4) and beams.shape == (2, ids.shape[1] + 4)


def test_generate_expands_vision_remember_features_per_prompt_and_beams_score_as_each_prompt_alone(model):
    """`generate()` expands the image output's `deepstack_features` (VR's inputs, a `VisionRememberFeatures`) per
    prompt with the pooled features; read by name afterwards it holds each prompt's images in order, and every beam
    of a batch scores as that prompt's beam search alone."""
    inputs, ids = image_inputs(model, SIZES[:2])
    output = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
    before = output.vision_remember_features
    assert isinstance(output.deepstack_features, VisionRememberFeatures)
    _, expanded = model._expand_inputs_for_generation(
        expand_size=2, input_ids=inputs["input_ids"], mm_encoder_outputs={"image": output}
    )
    after = expanded["mm_encoder_outputs"]["image"].vision_remember_features
    for name in VisionRememberFeatures._fields:  # [A, B] -> [A, A, B, B]
        assert [t.data_ptr() for t in getattr(after, name)] == [
            t.data_ptr() for t in getattr(before, name) for _ in "ab"
        ]
    beam = dict(max_new_tokens=3, do_sample=False, num_beams=2, num_return_sequences=2)
    batch = model.generate(**inputs, **beam, output_scores=True, return_dict_in_generate=True)
    for row, (sample, size) in enumerate(zip(ids, SIZES[: len(ids)], strict=True)):
        tiles = model.model.image_layouts(torch.tensor([size]))[0].num_tiles
        alone = model.generate(
            input_ids=sample[None], pixel_values=inputs["pixel_values"][row : row + 1, :tiles],
            image_sizes=torch.tensor([size]), **beam, output_scores=True, return_dict_in_generate=True,
        )  # fmt: skip
        torch.testing.assert_close(batch.sequences_scores[2 * row : 2 * row + 2], alone.sequences_scores)
        assert torch.equal(batch.sequences[2 * row : 2 * row + 2, -3:], alone.sequences[:, -3:])


def test_text_only_prompt_runs_without_vision(model):
    ids = left_pad([torch.tensor([5, 6, 7, 8]), torch.tensor([9, 10])])
    out = model(**ids)
    assert out.image_hidden_states is None
    assert model.generate(**ids, max_new_tokens=3, do_sample=False).shape == (2, 7)


def test_eager_and_sdpa_attention_give_the_same_logits():
    inputs, _ = image_inputs(tiny_model(), SIZES[:2])
    logits = {}
    for implementation in ("eager", "sdpa"):
        model = tiny_model(tiny_config(attn_implementation=implementation), perturb_vr=True)
        assert model.config.text_config._attn_implementation == implementation
        logits[implementation] = model(**inputs).logits
    real = inputs["attention_mask"].bool()  # padding rows are fully masked: undefined in either kernel
    torch.testing.assert_close(logits["eager"][real], logits["sdpa"][real], rtol=1e-4, atol=1e-5)


def test_save_and_load_round_trip_keeps_logits(model, tmp_path):
    inputs, _ = image_inputs(model, SIZES[:2])
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = LlavaVRForConditionalGeneration.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(model(**inputs).logits, loaded(**inputs).logits, rtol=0, atol=0)
    base = LlavaVRModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(model.model(**inputs).last_hidden_state, base(**inputs).last_hidden_state)


def test_bf16_forward_is_finite_and_close_to_fp32(model):
    inputs, _ = image_inputs(model, SIZES[:1])
    reference = model(**inputs).logits
    low = copy.deepcopy(model).to(torch.bfloat16)
    logits = low(**inputs | {"pixel_values": inputs["pixel_values"].bfloat16()}).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert (logits.float() - reference).abs().mean() < 0.05 * reference.abs().mean() + 0.05


def test_deepcopy_keeps_vision_remember_and_saliency(model):
    inputs, _ = image_inputs(model, SIZES[:2])
    clone = copy.deepcopy(model)
    torch.testing.assert_close(model(**inputs).logits, clone(**inputs).logits, rtol=0, atol=0)
    assert clone.model._saliency_recorder is not model.model._saliency_recorder


def test_siglip_tower_without_cls_uses_mean_token_saliency_and_adaptive_windows():
    config = tiny_config("siglip", image_size=42, vision_remember_interaction="sela")  # 3 x 3 patches -> 2 x 2 tokens
    assert config.vision_remember_saliency == "mean_token" and config.token_grid_size == 2
    model = tiny_model(config, perturb_vr=True)
    sizes = [(50, 90), (40, 40)]
    inputs, _ = image_inputs(model, sizes)
    features = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
    multi_level, saliency = features.vision_remember_features.features, features.vision_remember_features.saliency
    assert multi_level[0].shape[1:] == (9, 96) and saliency[0].shape[1:] == (9,)
    assert ((saliency[0] > 0) & (saliency[0] < 1)).all()
    assert torch.isfinite(model(**inputs).logits).all()
    cached = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(cached, model.generate(**inputs, max_new_tokens=4, do_sample=False, use_cache=False))


def test_cls_saliency_equals_sigmoid_of_cls_query_key_products_averaged_over_heads(model):
    pixel_values = torch.randn(1, 3, 56, 56)
    tower = model.model.vision_tower
    captured = {}
    layer = tower.encoder.layers[model.config.vision_remember_saliency_layer - 1]
    layer.register_forward_pre_hook(lambda m, a: captured.update(x=a[0]))
    features = model.model.get_image_features(pixel_values, torch.tensor([[56, 56]]), batch_num_images=[2])  # base tile
    normed = layer.layer_norm1(captured["x"])
    q = layer.self_attn.q_proj(normed)[:, :1].view(1, 1, 4, 8).transpose(1, 2)
    k = layer.self_attn.k_proj(normed).view(1, -1, 4, 8).transpose(1, 2)
    expected = torch.sigmoid(q @ k.transpose(-1, -2) / 8**0.5).mean(1)[0, 0, 1:]
    torch.testing.assert_close(features.vision_remember_features.saliency[0][0], expected)


def test_packed_token_cells_locate_every_packed_token():
    pinpoints = grid_pinpoints(56, 3, 3)
    for size in [(60, 100), (170, 30), (56, 56), (150, 150), (10, 160)]:
        layout = anyres_layout(size, pinpoints, 56, 4, "anyres")
        tiles = torch.randn(layout.num_tiles, 16, 8)
        packed = pack_tile_tokens(tiles, layout, torch.full((8,), 99.0))
        cells = packed_token_cells(layout)
        real = cells[:, 0] >= 0
        torch.testing.assert_close(packed[real], tiles[cells[real, 0], cells[real, 1] * 4 + cells[real, 2]])
        assert (packed[~real] == 99).all()


def test_image_tokens_without_pixel_values_raise(model):
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=torch.tensor([[1, IMAGE_TOKEN_ID, IMAGE_TOKEN_ID, 2]]))


def test_image_token_count_mismatch_raises_with_trl_phrase(model):
    inputs, _ = image_inputs(model, SIZES[:1])
    inputs["input_ids"] = inputs["input_ids"][:, 2:]  # drop prefix: still all image tokens, then add one more
    inputs["input_ids"][0, 0] = IMAGE_TOKEN_ID
    inputs["attention_mask"] = inputs["attention_mask"][:, 2:]
    with pytest.raises(ValueError, match="Image features and image tokens do not match"):
        model(**inputs)


def test_image_cut_by_truncation_raises(model):
    inputs, _ = image_inputs(model, SIZES[:1])
    cut = inputs["input_ids"].shape[1] - 6
    with pytest.raises(ValueError, match="Image features and image tokens do not match.*truncation"):
        model(
            input_ids=inputs["input_ids"][:, :cut],
            pixel_values=inputs["pixel_values"],
            image_sizes=inputs["image_sizes"],
        )


def test_chunked_prefill_through_an_image_is_refused(model):
    inputs, _ = image_inputs(model, SIZES[:1])
    with pytest.raises(ValueError, match="prefill_chunk_size"):
        model.generate(**inputs, max_new_tokens=2, prefill_chunk_size=4)


def test_wrong_tile_size_and_mismatched_image_sizes_raise(model):
    with pytest.raises(ValueError, match="the tower expects"):
        model.model.get_image_features(torch.randn(1, 3, 3, 40, 40), torch.tensor([[56, 56]]))
    with pytest.raises(ValueError, match="image_sizes"):
        model.model.get_image_features(torch.randn(2, 3, 3, 56, 56), torch.tensor([[56, 56]]))


def test_no_split_modules_name_exactly_the_blocks_that_exist(model):
    present = {type(m).__name__ for m in model.modules()}
    assert model._no_split_modules == {"Qwen2DecoderLayer", "CLIPEncoderLayer", "VisionRemember"}
    assert model._no_split_modules <= present


def test_config_rejects_layers_outside_the_towers():
    from huggingface_hub.errors import StrictDataclassClassValidationError

    with pytest.raises(StrictDataclassClassValidationError, match="vision_remember_layers"):
        tiny_config(vision_remember_layers=[1, 9])
    with pytest.raises(StrictDataclassClassValidationError, match="vision_remember_feature_layers"):
        tiny_config(vision_remember_feature_layers=[2, 7])


@pytest.mark.parametrize("interaction", INTERACTIONS)
def test_text_only_batch_under_data_parallel_runs_vision_with_zero_contribution(interaction, monkeypatch):
    model = tiny_model(perturb_vr=True, vision_remember_interaction=interaction).train()
    ids = left_pad([torch.tensor([5, 6, 7, 8]), torch.tensor([9, 10])])
    reference = model(**ids).logits
    monkeypatch.setattr(LlavaVRModel, "_is_data_parallel", staticmethod(lambda: True))
    ran = []
    model.model.language_model.vision_remember["1"].register_forward_hook(lambda *a: ran.append("vr"))
    model.model.vision_tower.register_forward_hook(lambda *a: ran.append("tower"))
    out = model(**ids, labels=ids["input_ids"])
    assert ran == ["tower", "vr"]
    torch.testing.assert_close(out.logits, reference, rtol=0, atol=0)
    out.loss.backward()
    vr_grads = [p.grad for p in model.model.language_model.vision_remember.parameters()]
    assert all(g is not None and not g.any() for g in vr_grads), "VR takes part with exactly zero gradient"
    assert not model.model.multi_modal_projector.linear_1.weight.grad.any()


def test_pad_aspect_ratio_encodes_the_base_tile_only(model):
    model.config.vision_aspect_ratio = "pad"
    layouts = model.model.image_layouts(torch.tensor(SIZES))
    assert all(lay.num_tiles == 1 and lay.num_tokens == model.config.num_image_tokens_per_tile + 1 for lay in layouts)
    inputs, _ = image_inputs(model, SIZES)
    assert inputs["pixel_values"].shape[1] == 1 and torch.isfinite(model(**inputs).logits).all()
