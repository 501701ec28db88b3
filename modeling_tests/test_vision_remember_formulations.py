"""The absorbed cross-attention equals the plain one (outputs and gradients; fp32 exactly, bf16 / fp16 within their
rounding), for every interaction, with and without saliency, with window masks, several images and AnyRes tiles, every
VR parameter (norm weights and biases included) off its init, also computed in blocks (of tokens or heads, block sizes
that do not divide the problem); `auto` picks the formulation with the lower estimated cost (FLOPs and bytes, per
device and dtype) where the modules allow folding (wrapped modules: `test_vision_remember_wrapped.py`)."""

import pytest
import torch

import llava_vr.token_feature_attention_llava_vr as token_feature_attention
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


BLOCKED = ("sela", "global", "global_tile")  # `deformable`'s absorbed intermediates are `(Nv, H, C_l)` in one call


def vr_outputs_and_gradients(
    interaction: str, saliency: str, grid: str, formulation: str, dtype=torch.float32, block_items: int | None = None
):
    """One VR module's output and the gradients of a fixed random projection of it w.r.t. its parameters, the
    hidden states and the multi-level features (model in `dtype`, every VR parameter perturbed; the absorbed
    formulation in blocks of `block_items` tokens or heads when given)."""
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
    module.cross_attention.absorbed_block_items = block_items
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


def real_size_inputs(
    interaction: str, tiles: int = 5, width: int | None = None
) -> tuple[VisionRemember, VisionRememberInputs]:
    """Cross-attention and inputs at the paper's sizes (CLIP-L, 3 levels: 3072-wide VR and features), one image of
    `tiles` tiles, on the meta device (no memory, only shapes; `attention.to_empty(device="cpu")` gives it real,
    uninitialised weights). `width`: VR's width (default: the features', 3072)."""
    from llava_vr import LlavaVRConfig

    config = LlavaVRConfig(
        vision_remember_interaction=interaction, text_config={"hidden_size": 896}, vision_remember_hidden_size=width
    )
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


def blocked_items(interaction: str, block_items: int) -> tuple[int, int]:
    """`(items, blocks)` the absorbed formulation of the test model splits into blocks of `block_items`."""
    _, _, attention, vr_inputs = vr_outputs_and_gradients(interaction, "off", "clip-regions", "plain")
    items = vr_inputs.positions.numel() if interaction == "sela" else attention.num_heads
    return items, len(token_feature_attention.absorbed_blocks(items, 1, block_items))


@pytest.mark.parametrize(
    ("interaction", "block_items"),  # 40 tokens (sela), 4 heads (grouped)
    [("sela", 3), ("sela", 7), ("global", 3), ("global_tile", 3)],
)
def test_blocked_absorbed_cross_attention_matches_plain_outputs_and_gradients(interaction, block_items):
    items, blocks = blocked_items(interaction, block_items)
    assert blocks > 1 and items % block_items != 0  # several blocks, the last one short
    plain, plain_grads, _, _ = vr_outputs_and_gradients(interaction, "cls", "clip-centred-window-3", "plain")
    blocked, blocked_grads, _, _ = vr_outputs_and_gradients(
        interaction, "cls", "clip-centred-window-3", "absorbed", block_items=block_items
    )
    assert relative_error(blocked, plain) < 1e-5
    for name, expected in plain_grads.items():
        if name.endswith("k_proj.bias"):  # cancels in the softmax
            continue
        assert relative_error(blocked_grads[name], expected) < 1e-5, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("interaction", BLOCKED)
def test_blocked_absorbed_cross_attention_matches_plain_in_half_precision(interaction, dtype):
    plain, plain_grads = vr_outputs_and_gradients(interaction, "cls", "clip-regions", "plain", dtype)[:2]
    blocked, blocked_grads = vr_outputs_and_gradients(interaction, "cls", "clip-regions", "absorbed", dtype, 3)[:2]
    unblocked = vr_outputs_and_gradients(interaction, "cls", "clip-regions", "absorbed", dtype)[0]
    tolerance = 3e-2 if dtype == torch.bfloat16 else 4e-3
    assert blocked.dtype == dtype
    assert relative_error(blocked, plain) < tolerance
    assert relative_error(blocked, unblocked) < tolerance
    for name, expected in plain_grads.items():
        if not name.endswith("k_proj.bias"):
            assert relative_error(blocked_grads[name], expected) < 2 * tolerance, name


def test_absorbed_blocks_cover_every_item_once_sized_from_the_problem_and_capped():
    def covered(blocks):
        return [i for block in blocks for i in range(block.start, block.stop)]

    budget = token_feature_attention.ABSORBED_BLOCK_BYTES
    assert token_feature_attention.absorbed_blocks(100, budget // 1000) == [slice(0, 100)]  # fits: one block
    blocks = token_feature_attention.absorbed_blocks(1440, budget // 100)  # 100 items per block
    assert covered(blocks) == list(range(1440)) and len(blocks) == 15 and blocks[-1] == slice(1400, 1440)
    many = token_feature_attention.absorbed_blocks(1440, budget)  # an item per block: capped
    assert covered(many) == list(range(1440)) and len(many) == token_feature_attention.MAX_ABSORBED_BLOCKS
    assert covered(token_feature_attention.absorbed_blocks(10, 1, items=3)) == list(range(10))
    assert token_feature_attention.absorbed_blocks(0, 1) == [slice(0, 0)]


@pytest.mark.parametrize(
    ("interaction", "expected"),
    [("sela", "absorbed"), ("deformable", "absorbed"), ("global", "plain"), ("global_tile", "plain")],
)
def test_auto_formulation_picks_the_lower_cost_at_the_papers_sizes(interaction, expected):
    """float32 on a CPU: FLOPs plus the bytes moved. `global_tile` needs slightly fewer FLOPs absorbed (0.96x) but
    moves every token's `(heads, C)` queries through the attention: plain."""
    attention, inputs = real_size_inputs(interaction)
    tokens = inputs.positions.numel()
    flops = attention.formulation_flops(inputs, tokens)
    costs = attention.formulation_costs(inputs, tokens, "cpu", torch.float32)
    assert min(costs, key=costs.get) == expected
    assert all(costs[k] >= flops[k] for k in flops)
    if interaction == "sela":  # the projection work drops by the 4 cells a token reads
        assert 3 < flops["plain"] / flops["absorbed"] < 4
    if interaction == "global_tile":
        assert flops["absorbed"] < flops["plain"]  # FLOPs alone would pick absorbed
    assert not attention.uses_absorbed(inputs, tokens)  # weights on meta (as Accelerate offload keeps them): plain
    attention.to_empty(device="cpu")
    assert attention.uses_absorbed(inputs, tokens) == (expected == "absorbed")


@pytest.fixture
def cpu_capability(monkeypatch):
    """`cpu_capability("AVX2")`: the CPU the cost model sees from then on (its per-device constants are cached, so the
    caches are cleared on each change and after the test, whatever it asserted)."""

    def clear():
        token_feature_attention.machine_balance.cache_clear()
        token_feature_attention.block_overhead.cache_clear()

    def set_capability(name: str):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: name)
        clear()

    yield set_capability
    clear()


def test_cost_model_weighs_bytes_by_device_and_dtype_and_is_deterministic(cpu_capability):
    attention, inputs = real_size_inputs("global_tile")
    tokens = inputs.positions.numel()
    flops = attention.formulation_flops(inputs, tokens)
    moved = attention.formulation_bytes(inputs, tokens, 2)
    balance = token_feature_attention.MACHINE_BALANCE[("cuda", "bfloat16")]
    costs = attention.formulation_costs(inputs, tokens, "cuda", torch.bfloat16)
    assert costs["plain"] == flops["plain"] + balance * moved["plain"]
    cached = token_feature_attention.CACHED_BYTES_COST * moved["absorbed_cached"]
    blocks = len(attention.absorbed_block_slices(inputs, tokens, 2))
    overhead = (blocks - 1) * token_feature_attention.BLOCK_OVERHEAD_FLOPS[("cuda", "bfloat16")]
    assert blocks > 1 and costs["absorbed"] == flops["absorbed"] + balance * (moved["absorbed"] + cached) + overhead
    assert costs == attention.formulation_costs(inputs, tokens, "cuda", torch.bfloat16)

    # a CPU without AVX-512 emulates bfloat16 matmuls (tens of times slower than its bytes): FLOPs decide
    cpu_capability("AVX2")
    emulated = attention.formulation_costs(inputs, tokens, "cpu", torch.bfloat16)
    cpu_capability("AVX512")
    native = attention.formulation_costs(inputs, tokens, "cpu", torch.bfloat16)
    assert min(emulated, key=emulated.get) == "absorbed" and min(native, key=native.get) == "plain"


def test_each_absorbed_block_after_the_first_costs_a_fixed_overhead_that_turns_small_many_block_problems_plain(
    cpu_capability,
):
    """SELA at width 1024: the absorbed `(Nv, H, C)` intermediates are 3x the plain formulation's live set, so it
    runs in the most blocks (16) at any tile count; their fixed cost (bfloat16 on an AVX-512 CPU) makes 2 tiles
    plain, while 10 tiles, the same blocks over 5x the work, stay absorbed (measured: 1.25 and 0.85 x plain). At the
    paper's width 3072 the blocks are fewer and absorbed wins at both (measured 0.86 and 0.77)."""
    cpu_capability("AVX512")
    picks = {}
    for width in (1024, 3072):
        for tiles in (2, 10):
            attention, inputs = real_size_inputs("sela", tiles, width)
            tokens = inputs.positions.numel()
            costs = attention.formulation_costs(inputs, tokens, "cpu", torch.bfloat16)
            blocks = len(attention.absorbed_block_slices(inputs, tokens, 2))
            without = (
                costs["absorbed"] - (blocks - 1) * token_feature_attention.BLOCK_OVERHEAD_FLOPS[("cpu", "bfloat16")]
            )
            assert without < costs["plain"]  # FLOPs and bytes alone pick absorbed everywhere
            picks[width, tiles] = (blocks, min(costs, key=costs.get))
    most = token_feature_attention.MAX_ABSORBED_BLOCKS
    assert picks[1024, 2] == (most, "plain") and picks[1024, 10] == (most, "absorbed")
    assert picks[3072, 2][1] == picks[3072, 10][1] == "absorbed" and picks[3072, 2][0] < most


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
