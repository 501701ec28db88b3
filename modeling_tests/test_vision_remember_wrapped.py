"""Vision Remember under what the ecosystem does to its modules after `__init__`: PEFT LoRA (`all-linear` reaches VR's
projections), Accelerate offload (hooks, weights on `meta`), `quantize_dynamic` / torchao / bitsandbytes (replaced
Linears or quantised weights) and autocast. The absorbed formulation folds `k_proj` / `v_proj` / `feature_norm`
without calling them, so where they are wrapped it must run the plain formulation (a forced `absorbed` is refused):
outputs and gradients equal the modules' own forward (a LoRA model equals its own `merge_and_unload()`).

Every test perturbs every VR parameter (norm weights and biases included) and runs VR layer "1" of a tiny model on the
inputs it received in one model forward."""

import copy
import dataclasses
import functools

import pytest
import torch
from torch import nn

from llava_vr.registries_llava_vr import VR_INTERACTIONS
from llava_vr.testing_utils import (
    image_inputs,
    perturb_every_vision_remember_parameter,
    tiny_config,
    tiny_model,
)
from llava_vr.token_feature_attention_llava_vr import FORMULATIONS, fold_blocker

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = [(60, 100), (120, 40)]  # two images, AnyRes tiles
REFUSED = r"vision_remember_formulation='absorbed'.*Set vision_remember_formulation='auto'"


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().float(), expected.detach().float()
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


@functools.cache
def _captured(interaction: str, dtype: torch.dtype):
    model = tiny_model(tiny_config(vision_remember_interaction=interaction))
    perturb_every_vision_remember_parameter(model)
    model.to(dtype)
    module = model.model.language_model.vision_remember["1"]
    captured = {}
    handle = module.register_forward_pre_hook(lambda _, args: captured.setdefault("args", args))
    with torch.no_grad():
        model(**image_inputs(model, SIZES)[0])
    handle.remove()
    hidden_states, vr_inputs = captured["args"][:2]
    return model, module, hidden_states, vr_inputs


def captured_call(interaction: str, dtype: torch.dtype = torch.float32):
    """`(model, VR layer "1", its hidden states, its VisionRememberInputs)` from one forward of a fresh tiny model in
    `dtype` (a copy: tests wrap, offload or quantise it)."""
    model, module, hidden_states, vr_inputs = copy.deepcopy(_captured(interaction, dtype))
    return model, module.train(), hidden_states, vr_inputs


def run(module, hidden_states, vr_inputs, formulation, backward=True, autocast=None):
    """The VR layer's output with `formulation`, and (with `backward`) the gradient of a fixed random projection of it
    w.r.t. the hidden states (the parameters' `.grad` are set, zeroed first). `autocast`: a dtype to run the forward
    under CPU autocast."""
    vr_inputs = dataclasses.replace(vr_inputs, formulation=formulation)
    module.zero_grad(set_to_none=True)
    hidden_states = hidden_states.detach().clone().requires_grad_(backward)
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        with torch.set_grad_enabled(backward):
            output = module(hidden_states, vr_inputs, *vr_inputs.tensors)
    if not backward:
        return output, None
    projection = torch.randn(output.shape, generator=torch.Generator().manual_seed(1))
    (output.float() * projection).sum().backward()
    return output.detach(), hidden_states.grad


# ------------------------------------------------------------------------------------------------ what may be folded


def test_fold_blocker_allows_only_plain_unhooked_materialised_linear_and_layer_norm():
    linear, norm = nn.Linear(4, 4), nn.LayerNorm(4)
    assert fold_blocker(linear) is None and fold_blocker(norm) is None

    class MyLinear(nn.Linear):
        pass

    assert "not a plain nn.Linear" in fold_blocker(MyLinear(4, 4))
    assert "eps" in fold_blocker(nn.LayerNorm(4, eps=1e-6))  # the shared normalisation uses FEATURE_NORM_EPS
    assert "weight is a NoneType" in fold_blocker(nn.LayerNorm(4, elementwise_affine=False))
    assert "bias is a NoneType" in fold_blocker(nn.Linear(4, 4, bias=False))
    with torch.device("meta"):
        assert "meta device" in fold_blocker(nn.Linear(4, 4))
    for register in (
        lambda m: m.register_forward_hook(lambda *_: None),
        lambda m: m.register_forward_pre_hook(lambda *_: None),
        lambda m: m.register_full_backward_hook(lambda *_: None),
    ):
        hooked = nn.Linear(4, 4)
        handle = register(hooked)
        assert "hooks" in fold_blocker(hooked)
        handle.remove()
        assert fold_blocker(hooked) is None
    patched = nn.Linear(4, 4)
    patched.forward = lambda x: x  # an instance-level forward, as Accelerate's add_hook_to_module sets
    assert "forward is replaced" in fold_blocker(patched)


# ---------------------------------------------------------------------------------------------------------------- LoRA


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("interaction", list(VR_INTERACTIONS))
def test_lora_all_linear_on_vision_remember_equals_its_merged_model_in_outputs_and_gradients(interaction, dtype):
    from peft import LoraConfig, get_peft_model

    model, module, hidden_states, vr_inputs = captured_call(interaction, dtype)
    base, _ = run(module, hidden_states, vr_inputs, "auto", backward=False)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    )
    with torch.no_grad():  # a trained adapter's size: its update ~10-20 % of VR's output, not larger than the base
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.1)
    attention = module.cross_attention
    folded = [name for name in attention.folded_modules if name.endswith("proj")]  # k_proj, v_proj (deformable: v)
    assert all(hasattr(getattr(attention, name), "lora_A") for name in folded)

    with pytest.raises(ValueError, match=REFUSED):
        run(module, hidden_states, vr_inputs, "absorbed")
    plain, plain_grad = run(module, hidden_states, vr_inputs, "plain")
    adapted, adapted_grad = run(module, hidden_states, vr_inputs, "auto")  # the choice for every image: plain
    lora = {}
    for name in folded:
        layer = getattr(attention, name)
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        assert a.grad.abs().max() > 0 and b.grad.abs().max() > 0, name  # the adapter on k/v learns
        lora[name] = (a.detach().clone(), b.detach().clone(), a.grad.clone(), b.grad.clone(), layer.scaling["default"])
    with peft_model.disable_adapter():  # a disabled adapter is the base model
        disabled, _ = run(module, hidden_states, vr_inputs, "auto", backward=False)

    peft_model.merge_and_unload()
    assert all(type(getattr(attention, name)) is nn.Linear for name in folded)
    module.requires_grad_(True)  # PEFT froze the base weights
    merged, merged_grad = run(module, hidden_states, vr_inputs, "absorbed")  # plain modules again: absorbed is exact
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    # bf16 `deformable`: bilinear sampling's gradient jumps at cell borders, and bf16 rounding of the (adapted or
    # merged) offsets moves some sampled corners across one (see the autocast test)
    grad_tolerance = 0.1 if dtype != torch.float32 and interaction == "deformable" else tolerance
    assert relative_error(merged, base) > 0.05  # the adapter changes the output
    assert relative_error(adapted, merged) < tolerance
    assert relative_error(plain, merged) < tolerance
    assert relative_error(disabled, base) < tolerance
    assert relative_error(adapted_grad, merged_grad) < grad_tolerance
    assert relative_error(plain_grad, merged_grad) < grad_tolerance
    for name, (a, b, grad_a, grad_b, scale) in lora.items():  # dL/dB = s G Aᵀ, dL/dA = s Bᵀ G, G = dL/d(merged W)
        weight_grad = getattr(attention, name).weight.grad.float()
        assert relative_error(grad_b, scale * weight_grad @ a.float().T) < 5 * grad_tolerance, name
        assert relative_error(grad_a, scale * b.float().T @ weight_grad) < 5 * grad_tolerance, name


def test_lora_on_the_llm_with_vision_remember_trained_fully_keeps_the_absorbed_formulation():
    """The package's LoRA recipe (`training.lora.lora_config_for`: adapters on the decoder layers, each VR layer a
    `modules_to_save` copy) leaves VR's own Linears plain: `auto` keeps folding them, exactly."""
    from peft import LoraConfig, get_peft_model

    model, module, hidden_states, vr_inputs = captured_call("sela")
    expected, _ = run(module, hidden_states, vr_inputs, "plain", backward=False)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            target_modules=r".*language_model\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj)",
            modules_to_save=[f"vision_remember.{i}" for i in model.config.vision_remember_layers],
            init_lora_weights=False,
        ),
    )
    trained = peft_model.base_model.model.model.language_model.vision_remember["1"].modules_to_save["default"]
    attention = trained.cross_attention
    assert attention.fold_blockers() == {}  # nothing stops the absorbed formulation: `auto` decides by cost alone
    tokens = vr_inputs.positions.numel()
    assert attention.uses_absorbed(vr_inputs, tokens) == module.cross_attention.uses_absorbed(vr_inputs, tokens)
    for formulation in ("absorbed", "auto"):  # a forced `absorbed` is not refused, and folds exactly
        actual, _ = run(trained, hidden_states, vr_inputs, formulation, backward=False)
        assert relative_error(actual, expected) < 1e-5, formulation


# ------------------------------------------------------------------------------------------------------------ autocast


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("interaction", list(VR_INTERACTIONS))
def test_every_formulation_runs_forward_and_backward_under_autocast_close_to_fp32(interaction, dtype):
    _, module, hidden_states, vr_inputs = captured_call(interaction)
    tolerance = 4e-2 if dtype == torch.bfloat16 else 5e-3
    # bilinear sampling's gradient jumps at cell borders; half-precision offsets move 2 of the 4608 sampled corners
    # across one here, which moves `deformable`'s gradients by ~6 % (its fp32 gradients are tested exactly elsewhere)
    grad_tolerance = 0.1 if interaction == "deformable" else tolerance
    for formulation in FORMULATIONS:
        expected, expected_grad = run(module, hidden_states, vr_inputs, formulation)
        expected_param_grads = {name: p.grad.clone() for name, p in module.named_parameters()}
        actual, actual_grad = run(module, hidden_states, vr_inputs, formulation, autocast=dtype)
        assert actual.dtype == torch.float32  # the residual stream keeps its dtype
        assert relative_error(actual, expected) < tolerance, formulation
        assert relative_error(actual_grad, expected_grad) < grad_tolerance, formulation
        for name, param in module.named_parameters():
            if name.endswith("k_proj.bias"):  # cancels in the softmax: zero up to rounding
                continue
            assert param.grad.abs().max() > 0, (formulation, name)
            assert relative_error(param.grad, expected_param_grads[name]) < 4 * grad_tolerance, (formulation, name)


# ------------------------------------------------------------------------------------------------------------- offload


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("interaction", list(VR_INTERACTIONS))
def test_accelerate_cpu_offload_of_vision_remember_equals_the_unwrapped_module(interaction, dtype):
    from accelerate import cpu_offload

    _, module, hidden_states, vr_inputs = captured_call(interaction, dtype)
    expected = {f: run(module, hidden_states, vr_inputs, f, backward=False)[0] for f in ("auto", "plain")}
    cpu_offload(module, execution_device="cpu")  # weights on meta, loaded by hooks on every leaf module
    attention = module.cross_attention
    assert attention.v_proj.weight.is_meta and attention.feature_norm.weight.is_meta
    assert hasattr(attention.v_proj, "_hf_hook")
    with pytest.raises(ValueError, match=REFUSED):
        run(module, hidden_states, vr_inputs, "absorbed", backward=False)
    offloaded, _ = run(module, hidden_states, vr_inputs, "auto", backward=False)
    assert torch.equal(offloaded, expected["plain"])  # the plain formulation, its modules called
    assert relative_error(offloaded, expected["auto"]) < (1e-5 if dtype == torch.float32 else 2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_device_map_disk_offload_equals_the_unwrapped_model(tmp_path, dtype):
    from llava_vr import LlavaVRForConditionalGeneration

    model = tiny_model(tiny_config(vision_remember_interaction="sela"))
    perturb_every_vision_remember_parameter(model)
    model.to(dtype).save_pretrained(tmp_path / "model")
    inputs, _ = image_inputs(model, SIZES)
    offloaded = LlavaVRForConditionalGeneration.from_pretrained(
        tmp_path / "model", dtype=dtype, device_map="auto", max_memory={"cpu": "300KB"},
        offload_folder=tmp_path / "offload",
    )  # fmt: skip
    attention = offloaded.model.language_model.vision_remember["1"].cross_attention
    assert attention.k_proj.weight.is_meta  # on disk, loaded by Accelerate's hooks
    with torch.no_grad():
        expected, actual = model(**inputs).logits, offloaded(**inputs).logits
    assert relative_error(actual, expected) < (1e-5 if dtype == torch.float32 else 3e-2)


# -------------------------------------------------------------------------------------------------------- quantisation


def quantize_dynamic_int8(module, dtype):
    torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8, inplace=True)


def torchao_int8_weight_only(module, dtype):
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(module, Int8WeightOnlyConfig())


def _replace_linears(module, build):
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, build(child))


def bitsandbytes_int8(module, dtype):
    import bitsandbytes as bnb

    def build(linear):
        quantized = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, has_fp16_weights=False)
        quantized.load_state_dict(linear.state_dict())
        return quantized.to(dtype)

    _replace_linears(module, build)


def bitsandbytes_nf4(module, dtype):
    import bitsandbytes as bnb

    def build(linear):
        quantized = bnb.nn.Linear4bit(linear.in_features, linear.out_features, compute_dtype=dtype, quant_type="nf4")
        quantized.load_state_dict(linear.state_dict())
        return quantized.to("cpu")  # quantises

    _replace_linears(module, build)


QUANTIZERS = {
    "quantize_dynamic": (quantize_dynamic_int8, [torch.float32]),  # int8 dynamic quantisation is fp32-only
    "torchao_int8_weight_only": (torchao_int8_weight_only, [torch.float32, torch.bfloat16]),
    "bitsandbytes_int8": (bitsandbytes_int8, [torch.float32, torch.bfloat16]),
    "bitsandbytes_nf4": (bitsandbytes_nf4, [torch.float32, torch.bfloat16]),
}


@pytest.mark.parametrize(
    ("quantizer", "dtype"), [(name, dtype) for name, (_, dtypes) in QUANTIZERS.items() for dtype in dtypes]
)
@pytest.mark.parametrize("interaction", ["sela", "deformable"])  # folds k_proj + v_proj; v_proj only
def test_quantized_vision_remember_runs_its_own_modules_in_the_plain_formulation(interaction, quantizer, dtype):
    _, module, hidden_states, vr_inputs = captured_call(interaction, dtype)
    unquantized, _ = run(module, hidden_states, vr_inputs, "plain", backward=False)
    QUANTIZERS[quantizer][0](module, dtype)
    attention = module.cross_attention
    assert attention.fold_blockers().keys() >= {"v_proj"}  # the quantiser did replace or quantise v_proj
    with pytest.raises(ValueError, match=REFUSED):
        run(module, hidden_states, vr_inputs, "absorbed", backward=False)
    actual, _ = run(module, hidden_states, vr_inputs, "auto", backward=False)
    expected, _ = run(module, hidden_states, vr_inputs, "plain", backward=False)
    assert torch.equal(actual, expected)
    assert relative_error(actual, unquantized) > 0  # the quantised modules ran
