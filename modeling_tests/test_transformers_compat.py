"""What differs between the supported Transformers versions (5.19 to 5.23) is pinned down here, on whichever version
runs (CI runs this file at both ends): the tower hidden states Vision Remember and the projector read, sub-configs,
logits slicing."""

import importlib.metadata

import pytest
import torch
import transformers
from packaging.requirements import Requirement
from transformers import AutoConfig, CLIPVisionConfig, Qwen2Config, SiglipVisionConfig

from llava_vr.compat_llava_vr import slice_logits_to_keep
from llava_vr.configuration_llava_vr import CLIP_VIT_L_336, LlavaVRConfig
from llava_vr.testing_utils import TILE, image_inputs, tiny_config, tiny_model, tiny_text_config, tiny_vision_config

SIZES = [(60, 100), (112, 113), (30, 200)]


def test_installed_transformers_is_in_the_supported_range():
    requirement = next(
        Requirement(r) for r in importlib.metadata.requires("llava-vr") if Requirement(r).name == "transformers"
    )
    assert requirement.specifier.contains(transformers.__version__), (transformers.__version__, requirement)


def tower_tiles(model, sizes, seed=0):
    """Every tile of images of `sizes`, flattened `(total_tiles, 3, tile, tile)`, as `get_image_features` takes it."""
    tiles = sum(layout.num_tiles for layout in model.model.image_layouts(torch.tensor(sizes)))
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(tiles, 3, TILE, TILE, generator=generator)


def towers_own_hidden_states(model, tiles):
    """The tower's own `output_hidden_states=True` tuple (index 0 = embeddings): the reference on any version."""
    with torch.no_grad():
        return model.model.vision_tower(tiles, output_hidden_states=True, return_dict=True).hidden_states


@pytest.mark.parametrize(
    "kind,feature_layers,projector_layer",
    [
        ("clip", [1, 2, 3], -2),  # the tiny default
        ("clip", [0, 2, 4], [-2, 1]),  # embeddings and the last state; a multi-layer projector input
        ("clip", [-4, -1], 0),  # negative indices from the end
        ("siglip", [1, 3, -1], -1),
        ("siglip", [0, -3, 4], [2, -1]),
    ],
)
def test_vr_multi_level_features_are_the_towers_hidden_states_at_the_configured_indices(
    kind, feature_layers, projector_layer
):
    """A shift by one layer (what `output_hidden_states=<list>` does under 5.19) would fail here."""
    config = tiny_config(kind, vision_remember_feature_layers=feature_layers, vision_feature_layer=projector_layer)
    model = tiny_model(config, perturb_vr=True)
    tiles = tower_tiles(model, SIZES)
    reference = towers_own_hidden_states(model, tiles)
    assert len(reference) == model.config.vision_config.num_hidden_layers + 1
    with torch.no_grad():
        output = model.model.get_image_features(tiles, torch.tensor(SIZES))
    cells = model.config.patch_grid_size**2
    expected = torch.cat([reference[i][:, -cells:] for i in feature_layers], dim=-1)
    torch.testing.assert_close(torch.cat(output.vision_remember_features.features), expected, rtol=0, atol=0)
    chosen = set(feature_layers) | set(projector_layer if isinstance(projector_layer, list) else [projector_layer])
    chosen = {i % len(reference) for i in chosen}
    for i, state in enumerate(output.hidden_states):
        if i in chosen:
            torch.testing.assert_close(state, reference[i], rtol=0, atol=0)
        else:
            assert state is None, f"hidden state {i} was kept though not chosen"


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hidden_state_zero_is_the_embeddings_output(kind):
    model = tiny_model(tiny_config(kind, vision_remember_feature_layers=[0, 2]))
    tiles = tower_tiles(model, SIZES[:1])
    vision = getattr(model.model.vision_tower, "vision_model", model.model.vision_tower)
    with torch.no_grad():
        embeddings = vision.embeddings(tiles)
        if kind == "clip":
            embeddings = vision.pre_layrnorm(embeddings)
        output = model.model.get_image_features(tiles, torch.tensor(SIZES[:1]))
    torch.testing.assert_close(output.hidden_states[0], embeddings, rtol=0, atol=0)


def test_projector_reads_the_configured_hidden_state():
    model = tiny_model(vision_feature_layer=-2)
    tiles = tower_tiles(model, SIZES[:1])
    reference = towers_own_hidden_states(model, tiles)
    with torch.no_grad():
        projected = model.model.get_image_features(tiles, torch.tensor(SIZES[:1])).pooler_output[0]
        expected = model.model.multi_modal_projector(reference[-2][:, 1:])  # `default` drops CLS
    grid = model.config.token_grid_size
    torch.testing.assert_close(projected[: grid * grid], expected[0].reshape(grid * grid, -1), rtol=0, atol=0)


def test_unknown_hidden_state_index_raises():
    model = tiny_model()
    with pytest.raises(ValueError, match="do not exist"):
        model.model.get_image_features(tower_tiles(model, SIZES[:1]), torch.tensor(SIZES[:1]), vision_feature_layer=5)


def test_tower_gradients_with_gradient_checkpointing_equal_those_without():
    """The recording hooks stay quiet when checkpointing recomputes the tower's layers in the backward pass."""
    inputs, _ = image_inputs(tiny_model(), SIZES[:2])
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(perturb_vr=True).train()
        model.model.vision_tower.requires_grad_(True)
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.model.vision_tower.named_parameters() if p.grad is not None})
        assert model.model._tower_hidden_states._states == {}
    assert grads[0] and grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6, msg=name)


# ---- sub-configs ----------------------------------------------------------------------------------------------------
def test_default_sub_configs_are_clip_vit_l_336_and_qwen2():
    config = LlavaVRConfig()
    assert isinstance(config.vision_config, CLIPVisionConfig) and isinstance(config.text_config, Qwen2Config)
    assert {key: getattr(config.vision_config, key) for key in CLIP_VIT_L_336} == CLIP_VIT_L_336
    assert config.sub_configs.keys() == {"vision_config", "text_config"}


def test_sub_configs_from_dicts_with_or_without_model_type_and_from_config_objects():
    vision = tiny_vision_config("siglip")
    text = {k: v for k, v in tiny_text_config().items() if k != "model_type"}
    config = tiny_config(vision_config=vision, text_config=text, vision_feature_select_strategy="full")
    assert isinstance(config.vision_config, SiglipVisionConfig) and config.vision_config.hidden_size == 32
    assert isinstance(config.text_config, Qwen2Config) and config.text_config.hidden_size == 64
    assert vision["model_type"] == "siglip_vision_model"  # the caller's dict is left as it was
    objects = tiny_config(vision_config=config.vision_config, text_config=config.text_config)
    assert objects.vision_config is config.vision_config and objects.text_config is config.text_config


def test_config_round_trips_through_json_and_auto_config(tmp_path):
    config = tiny_config("siglip", projector_type="ldpv2", vision_remember_interaction="deformable")
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded.vision_config) is SiglipVisionConfig and type(loaded.text_config) is Qwen2Config
    assert {**loaded.to_dict(), "_name_or_path": ""} == config.to_dict()
    assert LlavaVRConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


# ---- logits slicing -------------------------------------------------------------------------------------------------
def test_slice_logits_to_keep_takes_the_last_positions_or_given_ones():
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    assert torch.equal(slice_logits_to_keep(hidden, 0), hidden)
    assert torch.equal(slice_logits_to_keep(hidden, 2), hidden[:, -2:])
    assert torch.equal(slice_logits_to_keep(hidden, torch.tensor([0, 3])), hidden[:, [0, 3]])


def test_logits_to_keep_gives_the_last_positions_of_the_full_logits(model):
    inputs, _ = image_inputs(model, SIZES[:2])
    with torch.no_grad():
        full = model(**inputs).logits
        last = model(**inputs, logits_to_keep=1).logits
    assert last.shape[1] == 1
    torch.testing.assert_close(last, full[:, -1:], rtol=1e-5, atol=1e-6)
