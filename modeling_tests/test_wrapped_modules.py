"""The tower's saliency, gradient checkpointing and the data-parallel text-only pass under what the ecosystem does to
a model after it is built: PEFT LoRA `all-linear` (tower q/k wrapped), bitsandbytes 8-/4-bit and torchao loading,
`quantize_dynamic` (tower Linears replaced), Transformers' checkpointing switches, a text-only rank of a sharded run.

Every model here has every Vision Remember parameter moved off its init (norm weights and biases too) and the tower
saliency on (`sela`, CLS saliency from hidden state 3)."""

import copy

import pytest
import torch
from torch import nn

from llava_vr.modeling_llava_vr import LlavaVRForConditionalGeneration, LlavaVRModel
from llava_vr.packing_llava_vr import grid_pinpoints
from llava_vr.saliency_llava_vr import tower_encoder_layers
from llava_vr.testing_utils import TILE, image_inputs, left_pad, tiny_config, tiny_model, tiny_vision_config

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = [(60, 100), (120, 40)]
# LLaVA-NeXT's AnyRes-4 pinpoints (336 x {672, 1008} and 672 x 672) on the tiny 56-px tile: no 1 x 1 grid, so a
# tile-sized image gets a base tile and two crop tiles
ANYRES_4 = [[TILE, 2 * TILE], [2 * TILE, TILE], [2 * TILE, 2 * TILE], [3 * TILE, TILE], [TILE, 3 * TILE]]


def perturb_every_vision_remember_parameter(model, std=0.3, seed=1):
    """Moves every VR parameter off its init: zero-init output projections, norms' weights and biases, all of it."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.model.language_model.vision_remember.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * std)
    return model


def vr_model(**overrides):
    model = tiny_model(vision_remember_interaction="sela", **overrides)
    assert model.config.vision_remember_saliency in ("cls", "mean_token")
    return perturb_every_vision_remember_parameter(model)


def saliency_of(model, inputs) -> torch.Tensor:
    features = model.get_image_features(pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"])
    return torch.cat(features.deepstack_features[1])


def saliency_from_modules(model, inputs) -> torch.Tensor:
    """The CLS saliency (paper Eq. 3) computed here from the modules now in the tower's saliency layer, applied to
    that layer's input hidden state: what the recorded saliency must equal, whatever those modules are."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    features = inner.get_image_features(
        pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"], output_hidden_states=True
    )
    layer = tower_encoder_layers(inner.model.vision_tower)[inner.config.vision_remember_saliency_layer - 1]
    normed = layer.layer_norm1(features.hidden_states[inner.config.vision_remember_saliency_layer - 1])
    heads = layer.self_attn.num_heads
    query = layer.self_attn.q_proj(normed)[:, :1].float().unflatten(-1, (heads, -1)).transpose(1, 2)
    keys = layer.self_attn.k_proj(normed).float().unflatten(-1, (heads, -1)).transpose(1, 2)
    saliency = torch.sigmoid(query @ keys.transpose(-1, -2) / query.shape[-1] ** 0.5).mean(1)[:, 0]
    return saliency[:, -(inner.config.patch_grid_size**2) :]


def saliency_attention(model):
    """The tower attention whose q/k give the saliency (hidden state `s` comes out of encoder layer `s - 1`)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    layer = inner.config.vision_remember_saliency_layer - 1
    return tower_encoder_layers(inner.model.vision_tower)[layer].self_attn


# ---- PEFT LoRA all-linear -------------------------------------------------------------------------------------------


def lora_all_linear(model):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(model, config)


def relative_error(actual, expected) -> float:
    return ((actual.float() - expected.float()).norm() / expected.float().norm()).item()


# (dtype, tolerance on the saliency, relative logit error allowed): bf16 alone moves this tiny random model's logits
# by ~0.04 (base) to ~0.12 (with the adapter), fp16 by less; the adapter moves them by > 1
@pytest.mark.parametrize(
    "dtype, saliency_tolerance, logit_tolerance",
    [(torch.float32, 1e-5, 1e-5), (torch.bfloat16, 3e-2, 0.25), (torch.float16, 1e-2, 0.1)],
    ids=["fp32", "bf16", "fp16"],
)
@pytest.mark.parametrize("formulation", ["plain", "auto"])
def test_lora_all_linear_adapter_model_equals_its_merged_model(formulation, dtype, saliency_tolerance, logit_tolerance):
    torch.manual_seed(0)
    base = vr_model(vision_remember_formulation=formulation).to(dtype)
    inputs, _ = image_inputs(base, SIZES)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    adapted = lora_all_linear(copy.deepcopy(base))
    q_proj = saliency_attention(adapted).q_proj
    assert type(q_proj).__module__.startswith("peft"), "all-linear must reach the tower's q_proj"

    with torch.no_grad():
        base_logits = base(**inputs).logits.float()
        adapted_logits = adapted(**inputs).logits.float()
        adapted_saliency = saliency_of(adapted.get_base_model(), inputs).float()
        merged = adapted.merge_and_unload()
        merged_logits = merged(**inputs).logits.float()
        merged_saliency = saliency_of(merged, inputs).float()
        base_saliency = saliency_of(base, inputs).float()

    assert relative_error(adapted_logits, base_logits) > 0.8  # the adapter changes the model
    assert (adapted_saliency - base_saliency).abs().max() > 1e-3  # ... and the saliency (LoRA delta on tower q/k)
    torch.testing.assert_close(adapted_saliency, merged_saliency, rtol=saliency_tolerance, atol=saliency_tolerance)
    assert relative_error(adapted_logits, merged_logits) < logit_tolerance


def test_lora_on_tower_q_and_k_gets_the_saliencys_gradient():
    """Only the saliency reads the saliency layer's q/k when the loss sees nothing else of that layer's attention:
    with the layer's output projection zeroed, its q/k reach the loss through the saliency alone."""
    model = vr_model(vision_remember_formulation="plain")
    attention = saliency_attention(model)
    with torch.no_grad():
        attention.out_proj.weight.zero_()  # q/k no longer reach the layer's output
    adapted = lora_all_linear(model).train()
    with torch.no_grad():
        saliency_attention(adapted).out_proj.lora_B["default"].weight.zero_()  # nor through out_proj's adapter
    inputs, _ = image_inputs(model, SIZES)
    adapted(**inputs, labels=inputs["input_ids"]).loss.backward()
    for name in ("q_proj", "k_proj"):
        lora = getattr(saliency_attention(adapted), name)
        assert lora.lora_A["default"].weight.grad.abs().sum() > 0, name
        assert lora.lora_B["default"].weight.grad.abs().sum() > 0, name


# ---- quantized loading -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_vr_model(tmp_path_factory):
    # a 64-wide tower: bitsandbytes' packed 4-bit CPU kernel (inference on AVX512-BF16 CPUs) needs in_features
    # divisible by its block size, 64
    model = vr_model(vision_config={**tiny_vision_config(), "hidden_size": 64, "intermediate_size": 128})
    folder = tmp_path_factory.mktemp("vr") / "model"
    model.save_pretrained(folder)
    return model, folder


def quantized_forward(saved_vr_model, quantization_config, **kwargs):
    reference, folder = saved_vr_model
    model = LlavaVRForConditionalGeneration.from_pretrained(
        folder, quantization_config=quantization_config, device_map="cpu", **kwargs
    ).eval()
    inputs, _ = image_inputs(reference, SIZES)
    with torch.no_grad():
        logits, expected = model(**inputs).logits, reference(**inputs).logits
        saliency, own_saliency = saliency_of(model.model, inputs), saliency_from_modules(model, inputs)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(saliency, own_saliency, rtol=1e-5, atol=1e-6)  # read from the quantized q/k
    return model, relative_error(logits, expected)


def linear_classes(model, prefix: str) -> set[str]:
    return {type(m).__name__ for n, m in model.named_modules() if n.startswith(prefix) and "Linear" in type(m).__name__}


@pytest.mark.parametrize("bits", [8, 4])
def test_bitsandbytes_loading_runs_image_forwards_with_saliency_from_the_quantized_tower(saved_vr_model, bits):
    pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig

    if bits == 8:
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model, logit_error = quantized_forward(saved_vr_model, config)
    quantized = "Linear8bitLt" if bits == 8 else "Linear4bit"
    assert type(saliency_attention(model).q_proj).__name__ == quantized  # the hooked-at-init Linear is gone
    assert linear_classes(model, "model.language_model.layers") == {quantized}
    # unquantized by default: VR, projector, lm_head (LlavaVRPreTrainedModel.DEFAULT_UNQUANTIZED_MODULES)
    assert quantized not in linear_classes(model, "model.language_model.vision_remember")
    assert quantized not in linear_classes(model, "model.multi_modal_projector")
    assert type(model.lm_head) is nn.Linear
    # this random tiny model amplifies weight rounding: quantizing only its tower moves the logits by 0.13 (8-bit)
    # / 0.54 (nf4); measured 0.19 / 0.59 here (accuracy on a trained model: README, "Adapters, quantization and
    # offload")
    assert logit_error < (0.3 if bits == 8 else 0.8), logit_error


def test_qlora_on_the_4bit_tower_gets_the_saliencys_gradient_under_reentrant_checkpointing(tmp_path):
    """QLoRA as PEFT prepares it (4-bit base, `prepare_model_for_kbit_training` with reentrant gradient
    checkpointing on every layer), LoRA `all-linear`: the LoRA of the saliency layer's q/k gets the saliency's
    gradient (the layer's output projection and its adapter are zeroed: the saliency is their only way to the loss)."""
    pytest.importorskip("bitsandbytes")
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    model = vr_model(vision_config={**tiny_vision_config(), "hidden_size": 64, "intermediate_size": 128})
    with torch.no_grad():
        saliency_attention(model).out_proj.weight.zero_()
    model.save_pretrained(tmp_path)
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    quantized = LlavaVRForConditionalGeneration.from_pretrained(tmp_path, quantization_config=config)
    reentrant = {"use_reentrant": True}
    adapted = lora_all_linear(prepare_model_for_kbit_training(quantized, gradient_checkpointing_kwargs=reentrant))
    adapted.train()
    with torch.no_grad():
        saliency_attention(adapted).out_proj.lora_B["default"].weight.zero_()  # nor through out_proj's adapter
    assert all(layer.gradient_checkpointing for layer in tower_encoder_layers(quantized.model.vision_tower))
    inputs, _ = image_inputs(model, SIZES)
    adapted(**inputs, labels=inputs["input_ids"]).loss.backward()
    for name in ("q_proj", "k_proj"):
        lora = getattr(saliency_attention(adapted), name)
        assert type(lora.base_layer).__name__ == "Linear4bit"
        assert lora.lora_A["default"].weight.grad.abs().sum() > 0, name


def test_an_explicit_skip_list_is_kept(saved_vr_model):
    pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["lm_head", "model.vision_tower"])
    model = LlavaVRForConditionalGeneration.from_pretrained(saved_vr_model[1], quantization_config=config)
    assert config.llm_int8_skip_modules == ["lm_head", "model.vision_tower"]  # the caller's object is not changed
    assert linear_classes(model, "model.vision_tower") == {"Linear"}
    assert "Linear8bitLt" in linear_classes(model, "model.multi_modal_projector")


def test_torchao_int8_weight_only_loading_runs_image_forwards(saved_vr_model):
    pytest.importorskip("torchao")
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    model, logit_error = quantized_forward(saved_vr_model, TorchAoConfig(Int8WeightOnlyConfig()))
    assert type(saliency_attention(model).q_proj.weight) is not nn.Parameter  # a torchao quantized tensor
    assert type(model.model.multi_modal_projector.linear_1.weight) is nn.Parameter
    assert type(model.lm_head.weight) is nn.Parameter
    assert logit_error < 0.15, logit_error  # measured 0.08 on this random tiny model


def test_dynamic_int8_quantization_of_the_whole_model_gives_the_saliency_of_its_quantized_tower():
    model = vr_model(vision_remember_formulation="plain")
    inputs, _ = image_inputs(model, SIZES)
    quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    assert isinstance(saliency_attention(quantized).q_proj, torch.ao.nn.quantized.dynamic.Linear)
    with torch.no_grad():
        logits, expected_logits = quantized(**inputs).logits, model(**inputs).logits
        saliency, own_saliency = saliency_of(quantized.model, inputs), saliency_from_modules(quantized, inputs)
    torch.testing.assert_close(saliency, own_saliency, rtol=1e-5, atol=1e-6)
    assert relative_error(logits, expected_logits) < 0.3, relative_error(logits, expected_logits)


def test_disk_offloaded_tower_gives_the_saliency_and_logits_of_the_loaded_model(saved_vr_model, tmp_path):
    """Accelerate keeps an offloaded layer's weights on `meta` until its own forward hook loads them."""
    reference, folder = saved_vr_model
    device_map = {"model.vision_tower": "disk", "model.multi_modal_projector": "cpu", "model.language_model": "cpu"}
    device_map |= {"model.image_newline": "cpu", "lm_head": "cpu"}
    model = LlavaVRForConditionalGeneration.from_pretrained(folder, device_map=device_map, offload_folder=tmp_path)
    assert saliency_attention(model).q_proj.weight.device.type == "meta"
    inputs, _ = image_inputs(reference, SIZES)
    with torch.no_grad():
        torch.testing.assert_close(saliency_of(model.model, inputs), saliency_of(reference.model, inputs))
        torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits, rtol=1e-4, atol=1e-4)


def test_saliency_hooks_live_only_while_the_tower_encodes_even_when_it_raises():
    """The saliency hooks go on the modules present at each encoding and come off after it, also when the tower
    fails midway: none pile up on the tower's q/k, and the saliency of the next encoding is unchanged."""
    model = vr_model()
    inputs, _ = image_inputs(model, SIZES)
    attention = saliency_attention(model)
    hooks = lambda: len(attention.q_proj._forward_hooks) + len(attention.k_proj._forward_hooks)  # noqa: E731
    with torch.no_grad():
        expected = saliency_of(model.model, inputs)
        last_layer = tower_encoder_layers(model.model.vision_tower)[-1]  # runs after the saliency layer
        failing = last_layer.register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("tower fails")))
        with pytest.raises(RuntimeError, match="tower fails"):
            saliency_of(model.model, inputs)
        failing.remove()
        assert hooks() == 0
        model(**inputs)
        assert hooks() == 0
        torch.testing.assert_close(saliency_of(model.model, inputs), expected, rtol=0, atol=0)


# ---- gradient checkpointing (Transformers' test_gradient_checkpointing_enable_disable and its PEFT twin) ------------


@pytest.mark.parametrize("peft_loaded", [False, True], ids=["plain", "peft"])
def test_gradient_checkpointing_enable_disable_sets_every_flagged_module(peft_loaded):
    for model_class in (LlavaVRModel, LlavaVRForConditionalGeneration):
        model = model_class(copy.deepcopy(tiny_config(vision_remember_interaction="sela")))
        prefix = "model." if model_class is LlavaVRForConditionalGeneration else ""
        if peft_loaded:
            model._hf_peft_config_loaded = True  # as Transformers' test_peft_gradient_checkpointing_enable_disable
        assert not model.is_gradient_checkpointing
        model.gradient_checkpointing_enable()
        assert model.is_gradient_checkpointing
        flagged = {
            n: m.gradient_checkpointing for n, m in model.named_modules() if hasattr(m, "gradient_checkpointing")
        }
        assert sum(n.startswith(f"{prefix}vision_tower.encoder.layers.") for n in flagged) == 4, flagged
        assert all(flagged.values()), [n for n, on in flagged.items() if not on]
        model.gradient_checkpointing_disable()
        assert not model.is_gradient_checkpointing
        assert not any(m.gradient_checkpointing for m in model.modules() if hasattr(m, "gradient_checkpointing"))


@pytest.mark.parametrize("use_reentrant", [True, False], ids=["reentrant", "non-reentrant"])
def test_checkpointed_saliency_layer_gives_the_unchecked_saliency_gradient(use_reentrant):
    """Every tower layer checkpointed; the saliency's own gradient (VR reads it; here nothing else reads the layer's
    q/k) equals the unchecked model's."""

    def tower_grads(checkpointing):
        model = vr_model(vision_remember_formulation="plain").train()
        with torch.no_grad():
            saliency_attention(model).out_proj.weight.zero_()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
            assert all(layer.gradient_checkpointing for layer in tower_encoder_layers(model.model.vision_tower))
        inputs, _ = image_inputs(model, SIZES)
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        attention = saliency_attention(model)
        return attention.q_proj.weight.grad, attention.k_proj.weight.grad

    expected, actual = tower_grads(False), tower_grads(True)
    assert all(grad.abs().sum() > 0 for grad in expected)
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


# ---- data parallel: the text-only pass ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, overrides, tiles",
    [
        ("clip", dict(pinpoints=ANYRES_4), 3),
        ("clip", dict(pinpoints=grid_pinpoints(TILE, 2, 3)), 2),
        ("clip", dict(vision_aspect_ratio="pad"), 1),
        ("siglip", dict(image_size=42, pinpoints=[[42, 84], [84, 42], [84, 84]]), 3),
        ("siglip", dict(image_size=42), 2),
    ],
    ids=["clip-anyres4", "clip-1x1-pinpoint", "clip-pad", "siglip-anyres4", "siglip"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
def test_text_only_rank_runs_tower_projector_and_vr_on_the_models_own_blank_image(
    monkeypatch, kind, overrides, tiles, dtype
):
    model = vr_model(kind=kind, **overrides).to(dtype).train()
    tile = model.config.vision_config.image_size
    assert model.model.image_layouts(torch.tensor([[tile, tile]]))[0].num_tiles == tiles
    inputs = left_pad([torch.tensor([1, 2, 3, 4, 5]), torch.tensor([6, 7, 8])])
    expected = model(**inputs).logits  # no data parallelism: no vision pass
    monkeypatch.setattr(LlavaVRModel, "_is_data_parallel", staticmethod(lambda: True))
    encoded = []
    monkeypatch.setattr(
        type(model.model.vision_tower), "forward", _recording(type(model.model.vision_tower).forward, encoded)
    )
    output = model(**inputs, labels=inputs["input_ids"])
    assert [tuple(p.shape[:1]) for p in encoded] == [(tiles,)]
    torch.testing.assert_close(output.logits, expected, rtol=0, atol=0)  # the blank image contributes exactly zero
    output.loss.backward()
    text_only = {name for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    image, _ = image_inputs(model, [(tile, tile)])
    model(**image | {"pixel_values": image["pixel_values"].to(dtype)}, labels=image["input_ids"]).loss.backward()
    with_image = {name for name, p in model.named_parameters() if p.grad is not None}
    # every parameter an image rank reduces, the text-only rank reduces too (a zero gradient, not a missing one)
    assert with_image - text_only == set()
    for prefix in ("model.vision_tower", "model.multi_modal_projector", "model.language_model.vision_remember"):
        assert any(name.startswith(prefix) for name in with_image), prefix


def test_text_only_rank_stays_exact_in_fp16_when_the_blank_images_features_sum_past_its_range(monkeypatch):
    """The blank image's features are tied into the graph as `0 * their sum`: that sum must not overflow fp16 (65504;
    a converted 7B model's blank image has millions of features), or `0 * inf` makes the text-only rank's loss NaN."""
    model = vr_model().to(torch.float16).train()
    with torch.no_grad():
        model.model.multi_modal_projector.linear_2.bias.fill_(500.0)  # blank image: 10 features x 64 x 500 > 65504
    inputs = left_pad([torch.tensor([1, 2, 3, 4, 5]), torch.tensor([6, 7, 8])])
    expected = model(**inputs).logits
    monkeypatch.setattr(LlavaVRModel, "_is_data_parallel", staticmethod(lambda: True))
    output = model(**inputs, labels=inputs["input_ids"])
    torch.testing.assert_close(output.logits, expected, rtol=0, atol=0)
    output.loss.backward()
    assert torch.isfinite(output.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _recording(forward, encoded):
    def recorded(self, pixel_values, *args, **kwargs):
        encoded.append(pixel_values)
        return forward(self, pixel_values, *args, **kwargs)

    return recorded
