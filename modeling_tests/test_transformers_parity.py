"""With `projector_type="mlp"` and VR off or at init, LLaVA-VR reproduces Transformers' own LLaVA-NeXT and
LLaVA-OneVision (random tiny weights copied across): logits equal within 1e-5 relative."""

import pytest
import torch
from transformers import (
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
)

from llava_vr.testing_utils import (
    IMAGE_TOKEN_ID,
    image_inputs,
    tiny_config,
    tiny_model,
    tiny_text_config,
    tiny_vision_config,
)

SIZES = [(60, 100), (120, 40), (56, 56), (170, 30), (100, 160)]


def copy_into_llava_vr(source, config):
    """Loads a Transformers LLaVA model's weights into LLaVA-VR: same key names, only VR keys are new."""
    model = tiny_model(config)
    missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    assert not unexpected, unexpected
    assert all(".vision_remember." in key for key in missing), missing
    return model


def assert_same_logits(ours, theirs, inputs):
    real = inputs["attention_mask"].bool()
    expected = theirs(**inputs).logits[real]
    torch.testing.assert_close(
        ours(**inputs).logits[real], expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item()
    )


@pytest.mark.parametrize("vision_remember_layers", [[], [1, 4]])
def test_matches_transformers_llava_next(vision_remember_layers):
    config = tiny_config(
        projector_type="mlp",
        vision_aspect_ratio="anyres",
        multi_image_anyres=True,
        vision_remember_layers=vision_remember_layers,
    )
    torch.manual_seed(1)
    source = LlavaNextForConditionalGeneration(
        LlavaNextConfig(
            vision_config=tiny_vision_config(),
            text_config=tiny_text_config(),
            image_token_index=IMAGE_TOKEN_ID,
            image_grid_pinpoints=config.image_grid_pinpoints,
            vision_feature_select_strategy="default",
            vision_feature_layer=-2,
        )
    ).eval()
    ours = copy_into_llava_vr(source, config)
    inputs, _ = image_inputs(ours, SIZES)
    assert_same_logits(ours, source, inputs)
    assert torch.equal(
        ours.generate(**inputs, max_new_tokens=5, do_sample=False),
        source.generate(**inputs, max_new_tokens=5, do_sample=False),
    )


@pytest.mark.parametrize("vision_remember_layers", [[], [1, 4]])
@pytest.mark.parametrize("aspect_ratio", ["anyres_max_9", "anyres_max_1"])  # max_1 exercises the down-interpolation
def test_matches_transformers_llava_onevision(vision_remember_layers, aspect_ratio):
    config = tiny_config(
        "siglip",
        image_size=42,
        projector_type="mlp",
        vision_aspect_ratio=aspect_ratio,
        vision_remember_layers=vision_remember_layers,
    )
    torch.manual_seed(2)
    source = LlavaOnevisionForConditionalGeneration(
        LlavaOnevisionConfig(
            vision_config=tiny_vision_config("siglip", 42),
            text_config=tiny_text_config(),
            image_token_index=IMAGE_TOKEN_ID,
            image_grid_pinpoints=config.image_grid_pinpoints,
            vision_aspect_ratio=aspect_ratio,
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
        )
    ).eval()
    ours = copy_into_llava_vr(source, config)
    inputs, _ = image_inputs(ours, SIZES)
    if aspect_ratio == "anyres_max_1":
        assert any(layout.interpolated for layout in ours.model.image_layouts(inputs["image_sizes"]))
    assert_same_logits(ours, source, inputs)


def test_matches_transformers_llava_onevision_with_several_images_per_prompt():
    config = tiny_config("siglip", image_size=42, projector_type="mlp")
    torch.manual_seed(3)
    source = LlavaOnevisionForConditionalGeneration(
        LlavaOnevisionConfig(
            vision_config=tiny_vision_config("siglip", 42),
            text_config=tiny_text_config(),
            image_token_index=IMAGE_TOKEN_ID,
            image_grid_pinpoints=config.image_grid_pinpoints,
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
        )
    ).eval()
    ours = copy_into_llava_vr(source, config)
    per_image = config.token_grid_size**2 + 1
    input_ids = torch.tensor([[1, *[IMAGE_TOKEN_ID] * per_image, 2, *[IMAGE_TOKEN_ID] * per_image, 3]])
    inputs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": torch.randn(2, 1, 3, 42, 42),
        "image_sizes": torch.tensor([[60, 100], [120, 40]]),
        "batch_num_images": torch.tensor([2]),
    }
    assert_same_logits(ours, source, inputs)
