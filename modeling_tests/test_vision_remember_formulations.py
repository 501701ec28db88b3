"""The absorbed cross-attention equals the plain one (outputs and gradients; fp32 exactly, bf16 / fp16 within their
rounding), for every interaction, with and without saliency, with window masks, several images and AnyRes tiles, every
VR parameter (norm weights and biases included) off its init; `auto` picks the formulation with fewer FLOPs where the
modules allow folding (wrapped modules: `test_vision_remember_wrapped.py`)."""

import pytest
import torch

from llava_vr.registries_llava_vr import VR_INTERACTIONS
from llava_vr.testing_utils import image_inputs, perturb_every_vision_remember_parameter, tiny_config, tiny_model
from llava_vr.vision_remember_inputs_llava_vr import VisionRememberFeatures, VisionRememberInputs
from llava_vr.vision_remember_llava_vr import VisionRemember

SIZES = [(60, 100), (120, 40), (56, 170)]
GRIDS = {  # tower / windows: the plain 2x2 regions, clipped centred windows (masked), adaptive SigLIP regions
    "clip-regions": dict(),
    "clip-centred-window-3": dict(vision_remember_window_size=3, vision_remember_window_layout="centred"),
    "siglip-adaptive": dict(kind="siglip", image_size=70),
}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach(), expected.detach()
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def vr_outputs_and_gradients(interaction: str, saliency: str, grid: str, formulation: str, dtype=torch.float32):
    """One VR module's output and the gradients of a fixed random projection of it w.r.t. its parameters, the
    hidden states and the multi-level features (model in `dtype`, every VR parameter perturbed)."""
    config = tiny_config(
        **GRIDS[grid], vision_remember_interaction=interaction, vision_remember_saliency=saliency,
        vision_remember_formulation=formulation,
    )  # fmt: skip
    model = tiny_model(config)
    perturb_every_vision_remember_parameter(model)
    model.to(dtype)
    inputs, _ = image_inputs(model, SIZES)
    with torch.no_grad():
        image_features = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
    image_features = image_features.vision_remember_features
    features = [f.clone().requires_grad_() for f in image_features.features]
    vision_mask = inputs["input_ids"] == config.image_token_id
    vr_inputs = VisionRemember.prepare_inputs(vision_mask, image_features._replace(features=features), config)
    module: VisionRemember = model.model.language_model.vision_remember["1"].train()
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(*vision_mask.shape, config.text_config.hidden_size, generator=generator)
    hidden = hidden.to(dtype).requires_grad_()
    output = module(hidden, vr_inputs, *vr_inputs.tensors)
    (output.float() * torch.randn(output.shape, generator=generator)).sum().backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    grads |= {"hidden_states": hidden.grad, **{f"features.{i}": f.grad for i, f in enumerate(features)}}
    return output, grads, module.cross_attention, vr_inputs


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("saliency", ["cls", "off"])
@pytest.mark.parametrize("interaction", list(VR_INTERACTIONS))
def test_absorbed_cross_attention_matches_plain_outputs_and_gradients(interaction, saliency, grid):
    if grid == "siglip-adaptive" and saliency == "cls":
        saliency = "mean_token"  # SigLIP has no CLS token
    plain, plain_grads, attention, vr_inputs = vr_outputs_and_gradients(interaction, saliency, grid, "plain")
    absorbed, absorbed_grads, _, _ = vr_outputs_and_gradients(interaction, saliency, grid, "absorbed")
    assert vr_inputs.num_images == len(SIZES) and vr_inputs.features.shape[0] > len(SIZES)  # AnyRes tiles
    if interaction == "sela" and grid != "clip-regions":
        assert not vr_inputs.window_valid.all()  # the windows are masked
    assert relative_error(absorbed, plain) < 1e-5
    assert plain_grads.keys() == absorbed_grads.keys()
    for name, expected in plain_grads.items():
        actual = absorbed_grads[name]
        if name.endswith("k_proj.bias"):  # cancels in the softmax: zero in exact arithmetic, rounding noise here
            scale = plain_grads[name.replace("bias", "weight")].abs().max()
            assert actual.abs().max() < 1e-5 * scale and expected.abs().max() < 1e-5 * scale, name
            continue
        assert expected.abs().max() > 0, name
        assert relative_error(actual, expected) < 1e-5, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("interaction", list(VR_INTERACTIONS))
def test_absorbed_cross_attention_matches_plain_in_half_precision(interaction, dtype):
    """Both formulations of a bf16 / fp16 model are as close to the fp32 model as half precision allows, and to each
    other."""
    expected, expected_grads, _, _ = vr_outputs_and_gradients(interaction, "cls", "clip-regions", "plain")
    half = {
        f: vr_outputs_and_gradients(interaction, "cls", "clip-regions", f, dtype)[:2] for f in ("plain", "absorbed")
    }
    tolerance = 3e-2 if dtype == torch.bfloat16 else 4e-3
    # against fp32, bilinear sampling's gradient jumps at cell borders: half-precision offsets move a few of
    # `deformable`'s sampled corners across one (both formulations sample the same corners, so not between them)
    fp32_grad_tolerance = 0.2 if interaction == "deformable" else 2 * tolerance
    (plain, plain_grads), (absorbed, absorbed_grads) = half["plain"], half["absorbed"]
    assert plain.dtype == absorbed.dtype == dtype
    assert relative_error(absorbed, plain) < tolerance
    for formulation, (output, _) in half.items():
        assert relative_error(output.float(), expected) < tolerance, formulation
    for name, expected_grad in expected_grads.items():
        if name.endswith("k_proj.bias"):  # cancels in the softmax
            continue
        assert relative_error(absorbed_grads[name], plain_grads[name]) < 2 * tolerance, name
        assert relative_error(plain_grads[name].float(), expected_grad) < fp32_grad_tolerance, name


def real_size_inputs(interaction: str, tiles: int = 5) -> tuple[VisionRemember, VisionRememberInputs]:
    """Cross-attention and inputs at the paper's sizes (CLIP-L, 3 levels: 3072-wide VR and features), one image of
    `tiles` tiles, on the meta device (no memory, only shapes; `attention.to_empty(device="cpu")` gives it real,
    uninitialised weights)."""
    from llava_vr import LlavaVRConfig

    config = LlavaVRConfig(vision_remember_interaction=interaction, text_config={"hidden_size": 896})
    grid, g = config.patch_grid_size, config.token_grid_size
    with torch.device("meta"):
        attention = VisionRemember(config).cross_attention
    features = torch.empty(tiles, grid * grid, 3 * 1024, device="meta")
    tile, row, col = torch.meshgrid(torch.arange(tiles), torch.arange(g), torch.arange(g), indexing="ij")
    cells = torch.stack((tile, row, col), -1).reshape(-1, 3)
    mask = torch.zeros(1, cells.shape[0] + 20, dtype=torch.bool)
    mask[0, 10 : 10 + cells.shape[0]] = True
    image_features = VisionRememberFeatures(
        [torch.randn(tiles, grid * grid, 9)], [torch.ones(tiles, grid * grid)], [cells]
    )
    build = VisionRemember.prepare_inputs(mask, image_features, config)
    build.features, build.normalized_features = features, features
    return attention, build


@pytest.mark.parametrize(
    ("interaction", "expected"),
    [("sela", "absorbed"), ("deformable", "absorbed"), ("global", "plain"), ("global_tile", "absorbed")],
)
def test_auto_formulation_picks_fewer_flops_at_the_papers_sizes(interaction, expected):
    attention, inputs = real_size_inputs(interaction)
    tokens = inputs.positions.numel()
    flops = attention.formulation_flops(inputs, tokens)
    assert min(flops, key=flops.get) == expected
    if interaction == "sela":  # the projection work drops by the 4 cells a token reads
        assert 3 < flops["plain"] / flops["absorbed"] < 4
    assert not attention.uses_absorbed(inputs, tokens)  # weights on meta (as Accelerate offload keeps them): plain
    attention.to_empty(device="cpu")
    assert attention.uses_absorbed(inputs, tokens) == (expected == "absorbed")


def test_forced_formulation_is_used_refused_where_not_exact_and_absorbed_needs_normalized_features():
    attention, inputs = real_size_inputs("global")
    inputs.formulation = "absorbed"
    with pytest.raises(ValueError, match="vision_remember_formulation='absorbed'.*k_proj: its weight is on the meta"):
        attention.uses_absorbed(inputs, 10)
    attention.to_empty(device="cpu")
    assert attention.uses_absorbed(inputs, 10)
    inputs.formulation, inputs.normalized_features = "plain", None
    assert not attention.uses_absorbed(inputs, 10)
    inputs.formulation = "absorbed"
    with pytest.raises(ValueError, match="normalized_features"):
        attention.uses_absorbed(inputs, 10)
