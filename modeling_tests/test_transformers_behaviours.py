"""LLaVA-VR behaves as Transformers' generic model / generation tests expect of a model (issue 14): assisted decoding
with images, the tower's attentions / hidden states from `get_image_features`, the stock tower init of missing
weights, static cache + compiled decode step + custom 4D masks, and the processor's `num_image_tokens` / annotations.

Everything compares the model with its own plain behaviour (tiny configs from `llava_vr.testing_utils`)."""

import inspect

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoModel, BatchFeature, CompileConfig
from transformers.processing_utils import ProcessorMixin

from llava_vr import LlavaVRForConditionalGeneration
from llava_vr.benchmarks import cli as bench_cli
from llava_vr.packing_llava_vr import anyres_layout
from llava_vr.processing_llava_vr import LlavaVRProcessor
from llava_vr.testing_utils import image_inputs, tiny_config, tiny_model, tiny_processor, tiny_text_config

SIZES = [(56, 112), (112, 56)]


def vr_calls(model) -> list:
    """Appends one entry per Vision Remember forward of `model` (its first VR layer) to the returned list."""
    calls = []
    first = next(iter(model.model.language_model.vision_remember.values()))
    first.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[1]))
    return calls


# ---- 1. assisted / speculative decoding ------------------------------------------------------------------------------
def test_assisted_greedy_decoding_with_the_model_itself_equals_greedy_decoding(model):
    inputs, _ = image_inputs(model, SIZES[:1])
    plain = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    calls = vr_calls(model)
    assisted = model.generate(**inputs, max_new_tokens=8, do_sample=False, assistant_model=model)
    assert torch.equal(assisted, plain)
    assert calls and calls[0] == inputs["input_ids"].shape[1]  # VR ran on a full prefill with the images


def test_assisted_greedy_decoding_with_a_smaller_llava_vr_assistant_uses_the_assistants_own_image_features(model):
    assistant_config = tiny_config(
        text_config={**tiny_text_config(layers=3), "hidden_size": 32, "intermediate_size": 64},
        vision_remember_layers=[1],
    )
    assistant = tiny_model(assistant_config, seed=1, perturb_vr=True)
    inputs, _ = image_inputs(model, SIZES[:1])
    plain = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    seen = []
    assistant.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("mm_encoder_outputs")), with_kwargs=True
    )
    assistant_vr = vr_calls(assistant)
    assisted = model.generate(**inputs, max_new_tokens=8, do_sample=False, assistant_model=assistant)
    assert torch.equal(assisted, plain)
    own = assistant.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output
    assert seen[0] is not None and all(
        torch.equal(a, b) for a, b in zip(seen[0]["image"].pooler_output, own, strict=False)
    )
    assert all(images is None for images in seen[1:])  # later rounds continue from the assistant's cache
    assert assistant_vr == [inputs["input_ids"].shape[1]]


# ---- 3. get_image_features passes the tower's flags --------------------------------------------------------------
def test_get_image_features_returns_the_towers_attentions_and_hidden_states_when_asked():
    model = tiny_model(perturb_vr=True)
    model.model.vision_tower.set_attn_implementation("eager")
    inputs, _ = image_inputs(model, SIZES[:1])
    plain = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
    out = model.model.get_image_features(
        inputs["pixel_values"], inputs["image_sizes"], output_attentions=True, output_hidden_states=True
    )
    tiles = inputs["pixel_values"][0, : model.model.image_layouts(inputs["image_sizes"])[0].num_tiles]
    tower = model.model.vision_tower(tiles, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == len(tower.attentions) == model.config.vision_config.num_hidden_layers
    assert len(out.hidden_states) == len(tower.hidden_states) == model.config.vision_config.num_hidden_layers + 1
    for ours, stock in zip(
        [*out.attentions, *out.hidden_states], [*tower.attentions, *tower.hidden_states], strict=False
    ):
        torch.testing.assert_close(ours, stock)
    assert plain.attentions is None
    for a, b in zip(out.pooler_output, plain.pooler_output, strict=False):
        assert torch.equal(a, b)


# ---- 4. tower weights missing from a checkpoint ------------------------------------------------------------------
def _clear_init_flags(module):
    for item in [*module.modules(), *module.parameters(), *module.buffers()]:
        if hasattr(item, "_is_hf_initialized"):
            del item._is_hf_initialized


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_tower_weights_missing_from_a_checkpoint_get_the_stock_towers_init(kind, tmp_path):
    saved = tiny_model(tiny_config(kind))
    saved.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    kept = {k: v for k, v in weights.items() if ".vision_tower." not in k}
    save_file(kept, tmp_path / "model.safetensors", metadata={"format": "pt"})

    torch.manual_seed(123)
    loaded = LlavaVRForConditionalGeneration.from_pretrained(tmp_path)
    stock = AutoModel.from_config(saved.config.vision_config)  # Transformers' own CLIP / SigLIP vision model
    _clear_init_flags(stock)
    torch.manual_seed(123)
    stock.initialize_weights()  # the stock rules, drawing the same random numbers in the same order

    ours, reference = loaded.model.vision_tower.state_dict(), stock.state_dict()
    assert ours.keys() == reference.keys()
    assert [name for name in reference if not torch.equal(ours[name], reference[name])] == []
    if kind == "clip":  # e.g. CLIP's scaled q_proj init, not the generic N(0, 0.02)
        vision = saved.config.vision_config
        expected = vision.hidden_size**-0.5 * (2 * vision.num_hidden_layers) ** -0.5
        assert abs(float(ours["encoder.layers.0.self_attn.q_proj.weight"].std()) / expected - 1) < 0.1
    loaded_weights = loaded.state_dict()
    assert all(torch.equal(loaded_weights[name], value) for name, value in kept.items())  # loaded ones untouched


# ---- 5. static cache, compiled decode step, custom 4D masks ------------------------------------------------------
def test_static_cache_generation_equals_dynamic_cache_with_vision_remember(model):
    inputs, _ = image_inputs(model, SIZES)
    dynamic = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    static = model.generate(**inputs, max_new_tokens=6, do_sample=False, cache_implementation="static")
    assert torch.equal(static, dynamic)


def test_compiled_decode_step_with_static_cache_equals_eager_without_graph_breaks_or_recompiles(model):
    """Transformers' compiled decode step (`fullgraph=True`, `dynamic=False`), forced on CPU as in its own tests. The
    `eager` backend runs Dynamo's full-graph capture (where graph breaks fail) without Inductor's C++ build, to stay
    fast; `llava-vr bench decode` times the Inductor-compiled step."""
    assert LlavaVRForConditionalGeneration._can_compile_fullgraph
    input_sets = [image_inputs(model, SIZES, seed=seed)[0] for seed in (0, 1)]
    eager = [model.generate(**inputs, max_new_tokens=5, do_sample=False) for inputs in input_sets]
    compile_config = CompileConfig(fullgraph=True, dynamic=False, backend="eager", mode=None)
    compile_config._compile_all_devices = True
    torch.compiler.reset()
    kwargs = dict(max_new_tokens=5, do_sample=False, cache_implementation="static", compile_config=compile_config)
    compiled = [model.generate(**input_sets[0], **kwargs)]
    assert hasattr(model, "_compiled_call")
    with torch.compiler.set_stance("fail_on_recompile"):
        compiled.append(model.generate(**input_sets[1], **kwargs))
    for a, b in zip(compiled, eager, strict=False):
        assert torch.equal(a, b)


def test_custom_4d_mask_with_a_shared_image_prefix_equals_separate_sequences(model):
    """Transformers' `test_custom_4d_attention_mask`, with the image in the shared prefix: three continuations of one
    prompt in one row (4D mask, repeated positions) give the logits of the three sequences run alone."""
    inputs, (prompt,) = image_inputs(model, SIZES[:1])
    endings = torch.tensor([[7], [8], [9]])
    separate = model(
        input_ids=torch.cat([prompt.expand(3, -1), endings], dim=1),
        pixel_values=inputs["pixel_values"].expand(3, -1, -1, -1, -1),
        image_sizes=inputs["image_sizes"].expand(3, -1),
    ).logits[:, -1]
    n = prompt.shape[0]
    mask = torch.ones(n + 3, n + 3).tril()
    mask[n:, n:] = torch.eye(3)
    float_mask = (mask == 0).float()[None, None] * torch.finfo(torch.float32).min
    shared = model(
        input_ids=torch.cat([prompt, endings[:, 0]])[None],
        attention_mask=float_mask,
        position_ids=torch.cat([torch.arange(n), torch.full((3,), n)])[None],
        pixel_values=inputs["pixel_values"],
        image_sizes=inputs["image_sizes"],
    ).logits[0, -3:]
    torch.testing.assert_close(shared, separate, rtol=1e-4, atol=1e-4)


def test_packed_samples_with_a_block_causal_4d_mask_equal_each_sample_alone(model):
    inputs, ids = image_inputs(model, SIZES)
    lengths = [len(sample) for sample in ids]
    mask = torch.block_diag(*[torch.ones(n, n).tril() for n in lengths]).bool()
    packed = (
        model(
            input_ids=torch.cat(ids)[None],
            attention_mask=mask[None, None],
            position_ids=torch.cat([torch.arange(n) for n in lengths])[None],
            pixel_values=inputs["pixel_values"],
            image_sizes=inputs["image_sizes"],
        )
        .logits[0]
        .split(lengths)
    )
    for row, (sample, logits) in enumerate(zip(ids, packed, strict=False)):
        tiles = model.model.image_layouts(inputs["image_sizes"][row : row + 1])[0].num_tiles
        alone = model(
            input_ids=sample[None],
            pixel_values=inputs["pixel_values"][row : row + 1, :tiles],
            image_sizes=inputs["image_sizes"][row : row + 1],
        ).logits[0]
        torch.testing.assert_close(logits, alone, rtol=1e-4, atol=1e-4)


def test_decode_benchmark_is_a_bench_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_cli.main(["decode", "--help"])
    assert exit_info.value.code == 0
    assert "--decode-tokens" in capsys.readouterr().out


# ---- 6. processor ----------------------------------------------------------------------------------------------------
def test_setting_num_image_tokens_after_loading_changes_the_placeholder_count(tmp_path):
    config = tiny_config(projector_type="mlp")  # 16 tokens per tile
    tiny_processor(config).save_pretrained(tmp_path)
    processor = LlavaVRProcessor.from_pretrained(tmp_path)
    image = Image.fromarray(np.zeros((56, 112, 3), np.uint8))

    def placeholders():
        ids = processor(images=[image], text="<image>What is it?", return_tensors="pt")["input_ids"]
        return int((ids == processor.image_token_id).sum())

    layout = anyres_layout((56, 112), config.image_grid_pinpoints, 56, 4, processor.vision_aspect_ratio)
    assert placeholders() == layout.num_tokens
    processor.num_image_tokens = 4  # a pooling projector's 2 x 2 tokens per tile
    assert processor.token_grid == 2
    assert placeholders() == anyres_layout((56, 112), config.image_grid_pinpoints, 56, 2, "anyres_max_9").num_tokens
    processor.save_pretrained(tmp_path / "changed")
    assert LlavaVRProcessor.from_pretrained(tmp_path / "changed").num_image_tokens == 4


def test_a_num_image_tokens_that_is_not_a_square_grid_is_refused_on_assignment():
    processor = tiny_processor(tiny_config())
    with pytest.raises(ValueError, match="square token grid"):
        processor.num_image_tokens = 15
    assert processor.num_image_tokens == 4


def test_processor_call_has_the_type_annotations_of_transformers_processors():
    ours = inspect.signature(LlavaVRProcessor.__call__)
    stock = inspect.signature(ProcessorMixin.__call__)
    for name in ("images", "text", "videos", "audio", "kwargs"):
        assert ours.parameters[name].annotation == stock.parameters[name].annotation, name
    assert ours.return_annotation is BatchFeature
