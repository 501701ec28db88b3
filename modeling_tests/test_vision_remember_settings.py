"""Vision Remember settings follow the paper by default and are stored explicitly; the registries are what the config
accepts; each interaction declares what it reads and checks its own settings; Swin-partition windows; image-wide
`global`."""

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError

from llava_vr import LlavaVRConfig
from llava_vr.feature_windows_llava_vr import WINDOW_BOUNDS, feature_window_index
from llava_vr.registries_llava_vr import FORMULATIONS, VR_INTERACTIONS, WINDOW_LAYOUTS
from llava_vr.testing_utils import image_inputs, tiny_config, tiny_model, tiny_vision_config
from llava_vr.token_feature_attention_llava_vr import TokenFeatureLocalAttention
from llava_vr.vision_remember_llava_vr import CROSS_ATTENTION_CLASSES, VisionRemember, VisionRememberFeatures

RESOLVED = [
    "vision_remember_hidden_size",
    "vision_remember_num_heads",
    "vision_remember_saliency",
    "vision_remember_saliency_layer",
    "vision_remember_window_layout",
    "vision_remember_interaction",
    "vision_remember_self_attention",
]


def test_default_vision_remember_is_as_wide_as_the_multi_level_features():
    config = LlavaVRConfig()
    assert config.vision_remember_feature_layers == [13, 18, 23]
    assert config.vision_remember_feature_size == 3 * 1024  # levels x tower width
    assert config.vision_remember_hidden_size == 3 * 1024 and config.vision_remember_num_heads == 16
    assert config.vision_remember_saliency == "cls" and config.vision_remember_saliency_layer == 23
    assert config.vision_remember_window_layout == "partition" and config.vision_remember_self_attention


@pytest.mark.parametrize(
    ("kind", "interaction", "expected"),
    [("clip", "sela", "cls"), ("siglip", "sela", "mean_token"), ("clip", "global", "off"),
     ("clip", "global_tile", "off"), ("clip", "deformable", "off"), ("siglip", "deformable", "off")],
)  # fmt: skip
def test_auto_saliency_is_on_for_sela_only(kind, interaction, expected):
    assert tiny_config(kind, vision_remember_interaction=interaction).vision_remember_saliency == expected


def test_explicit_saliency_is_kept_for_every_interaction():
    for interaction in VR_INTERACTIONS:
        config = tiny_config(vision_remember_interaction=interaction, vision_remember_saliency="cls")
        assert config.vision_remember_saliency == "cls"
        assert tiny_model(config).model._saliency_recorder is not None


def test_saved_config_json_holds_every_resolved_setting(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {key: saved[key] for key in RESOLVED} == {
        "vision_remember_hidden_size": 96, "vision_remember_num_heads": 4, "vision_remember_saliency": "cls",
        "vision_remember_saliency_layer": 3, "vision_remember_window_layout": "partition",
        "vision_remember_interaction": "sela", "vision_remember_self_attention": True,
    }  # fmt: skip
    loaded = LlavaVRConfig.from_pretrained(tmp_path)
    assert all(getattr(loaded, key) == saved[key] for key in RESOLVED)


def test_config_json_with_settings_left_to_defaults_resolves_them_as_today(tmp_path):
    """No reader of older meanings: `null` / `auto` settings resolve to the paper defaults, a missing layout to
    `partition`."""
    old = tiny_config(vision_remember_interaction="global").to_dict()
    for key in ("vision_remember_hidden_size", "vision_remember_num_heads", "vision_remember_saliency_layer"):
        old[key] = None
    old["vision_remember_saliency"] = "auto"
    del old["vision_remember_window_layout"], old["vision_remember_formulation"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    config = LlavaVRConfig.from_pretrained(tmp_path)
    assert config.vision_remember_hidden_size == config.vision_remember_feature_size == 3 * 32
    assert config.vision_remember_saliency == "off" and config.vision_remember_interaction == "global"
    assert config.vision_remember_window_layout == "partition" and config.vision_remember_formulation == "auto"
    for alias in ("saliency_layer", "saliency_mode", "vision_remember_hidden_size_resolved"):
        assert not hasattr(config, alias)


@pytest.mark.parametrize(
    ("field", "registry"),
    [("vision_remember_formulation", FORMULATIONS), ("vision_remember_window_layout", WINDOW_LAYOUTS),
     ("vision_remember_interaction", VR_INTERACTIONS)],
)  # fmt: skip
def test_config_accepts_exactly_the_registered_names(field, registry):
    for name in registry:
        assert getattr(tiny_config(**{field: name}), field) == name
    with pytest.raises(StrictDataclassError, match=field):
        tiny_config(**{field: "not_registered"})
    assert set(WINDOW_BOUNDS) == set(WINDOW_LAYOUTS)


def test_bundled_model_config_json_pins_every_vision_remember_setting():
    saved = json.loads(Path("examples/trained_models/llava-vr-tiny-digit-grid/config.json").read_text())
    settings = {key: value for key, value in saved.items() if key.startswith("vision_remember_")}
    assert set(RESOLVED) <= set(settings)
    assert all(settings[key] is not None and settings[key] != "auto" for key in RESOLVED)


def test_partition_windows_are_aligned_blocks_shared_by_the_tokens_over_them():
    index, valid = feature_window_index(12, 24, 4, layout="partition")  # s = 4: 2x2 token blocks, 4x4 windows
    assert valid.all() and index.shape == (144, 16)
    windows = index.view(12, 12, 16)
    for i, j in [(0, 0), (4, 6), (10, 2)]:
        block = windows[i - i % 2 : i - i % 2 + 2, j - j % 2 : j - j % 2 + 2].reshape(4, 16)
        assert (block == windows[i, j]).all()  # the 4 tokens of an aligned 2x2 block share one window
        rows, cols = windows[i, j] // 24, windows[i, j] % 24
        assert set(rows.tolist()) == set(range(4 * (i // 2), 4 * (i // 2) + 4))
        assert set(cols.tolist()) == set(range(4 * (j // 2), 4 * (j // 2) + 4))
    distinct = {tuple(w.tolist()) for w in index}
    assert len(distinct) == 36 and sorted(c for w in distinct for c in w) == list(range(576))  # a partition
    centred, _ = feature_window_index(12, 24, 4, layout="centred")
    assert not torch.equal(centred, index)
    for layout in ("partition", "centred"):  # the region itself when the window is the region
        assert torch.equal(feature_window_index(12, 24, 2, layout=layout)[0], feature_window_index(12, 24)[0])


def test_partition_window_clipped_at_the_border_is_masked():
    index, valid = feature_window_index(12, 24, 16, layout="partition")  # windows [0, 16) and [16, 24)
    assert valid[0].all() and valid[-1].sum() == 8 * 8


@pytest.mark.parametrize("window", [3, 5, 26])
def test_window_that_cannot_partition_the_grid_is_refused_when_sela_is_built(window):
    config = LlavaVRConfig(vision_remember_window_size=window)  # SELA's class checks its window, not the config
    with pytest.raises(ValueError, match="vision_remember_window"):
        TokenFeatureLocalAttention.check_config(config)
    with pytest.raises(ValueError, match="vision_remember_window"):
        VisionRemember(config)  # checked before anything is allocated
    with pytest.raises(ValueError, match="vision_remember_window"):
        feature_window_index(12, 24, window, layout="partition")


def test_partition_on_adaptive_siglip_regions_is_refused_and_centred_is_allowed():
    with pytest.raises(ValueError, match="centred"):
        tiny_model(tiny_config("siglip", image_size=70, vision_remember_window_size=2))
    tiny_model(tiny_config("siglip", 70, vision_remember_window_size=2, vision_remember_window_layout="centred"))


@pytest.mark.parametrize("interaction", list(VR_INTERACTIONS))
def test_vision_remember_inputs_hold_what_the_interaction_declares(interaction):
    """Windows for an interaction that reads them (the configured 4x4 partition windows), else the token's own 2x2
    region; features normalised per level for one that normalises per level, else over the whole width."""
    config = tiny_config("clip", image_size=112, vision_remember_interaction=interaction, vision_remember_window_size=4)
    declared = CROSS_ATTENTION_CLASSES[interaction]
    tiles, cells = 2, config.patch_grid_size**2  # 8 x 8 features, 4 x 4 tokens per tile
    levels = len(config.vision_remember_feature_layers)
    scale = torch.tensor([1.0, 3.0, 10.0]).repeat_interleave(config.vision_config.hidden_size)  # levels differ
    features = torch.randn(tiles, cells, config.vision_remember_feature_size) * scale + scale
    token_cells = torch.stack(torch.meshgrid(torch.arange(tiles), torch.arange(4), torch.arange(4), indexing="ij"), -1)
    mask = torch.ones(1, tiles * 16, dtype=torch.bool)
    image_features = VisionRememberFeatures([features], [torch.ones(tiles, cells)], [token_cells.reshape(-1, 3)])
    inputs = VisionRemember.prepare_inputs(mask, image_features, config)
    assert inputs.window_index.shape == (tiles * 16, 16 if interaction == "sela" else 4)
    assert declared.reads_windows == (interaction == "sela")
    whole = inputs.normalized_features
    per_level = whole.unflatten(-1, (levels, -1))
    normalized = whole if interaction != "deformable" else per_level  # over the whole width, or per level
    torch.testing.assert_close(normalized.mean(-1), torch.zeros(normalized.shape[:-1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalized.var(-1, unbiased=False), torch.ones(normalized.shape[:-1]), atol=1e-3, rtol=0)
    level_variances = per_level.var(-1, unbiased=False)
    if interaction == "deformable":
        assert (level_variances - 1).abs().max() < 1e-3
    else:  # the first level is the narrowest: a small share of the whole width's variance
        assert level_variances[..., 0].max() < 0.1
    assert declared.normalizes_per_level == (interaction == "deformable")


def _token_output(interaction: str, change_image: int, change_tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """VR output rows of image 0's first token with the original features and with one tile's features changed."""
    # no token self-attention: it would carry other tiles' features to every token of the image
    model = tiny_model(perturb_vr=True, vision_remember_interaction=interaction, vision_remember_self_attention=False)
    inputs, _ = image_inputs(model, [(60, 100), (120, 40)])
    image_features = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
    image_features = image_features.vision_remember_features
    mask = inputs["input_ids"] == model.config.image_token_id
    hidden = torch.randn(*mask.shape, model.config.text_config.hidden_size)
    module = model.model.language_model.vision_remember["1"]
    outputs = []
    for changed in (False, True):
        features = [f.clone() for f in image_features.features]
        if changed:
            features[change_image][change_tile] *= 1 + torch.rand_like(features[change_image][change_tile])
        vr_inputs = VisionRemember.prepare_inputs(mask, image_features._replace(features=features), model.config)
        first = vr_inputs.positions[(vr_inputs.image_index == 0) & (vr_inputs.token_tile == 0)][0]
        outputs.append(module(hidden, vr_inputs).flatten(0, 1)[first])
    return outputs[0], outputs[1]


@pytest.mark.parametrize(
    ("interaction", "reads_other_tiles"), [("global", True), ("global_tile", False), ("sela", False)]
)
def test_global_reads_every_tile_of_the_tokens_image_and_no_other_image(interaction, reads_other_tiles):
    with torch.no_grad():
        same, other_tile = _token_output(interaction, change_image=0, change_tile=1)
        assert (not torch.allclose(same, other_tile)) == reads_other_tiles
        same, other_image = _token_output(interaction, change_image=1, change_tile=0)
        assert torch.equal(same, other_image)


def test_siglip_tiny_vision_config_has_no_cls():
    assert tiny_vision_config("siglip")["model_type"] == "siglip_vision_model"
