"""LlavaVRProcessor: counts from the model's own layout, chat template, odd images, bad input, Transformers parity."""

import numpy as np
import pytest
import torch
from conftest import PINPOINTS, processor_and_model, tiny_config, tiny_processor
from PIL import Image
from tiny_tokenizer import build_tiny_tokenizer
from transformers import LlavaNextProcessor
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from llava_vr import LlavaVRProcessor
from llava_vr.packing_llava_vr import anyres_layout

SIZES = [
    (1, 1), (1, 3000), (3000, 1), (4000, 20), (20, 4000), (56, 56), (60, 100), (100, 60), (111, 57), (57, 111),
    (112, 112), (113, 112), (224, 336), (336, 224), (500, 499), (640, 480), (480, 640), (1080, 1920), (33, 97),
    (97, 33), (168, 56), (56, 168), (777, 333),
]
USER_IMAGE = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the total?"}]}]


def image(size, mode="RGB"):
    height, width = size
    pixels = np.random.default_rng(height * 7 + width).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


@pytest.mark.parametrize("projector", ["mlp", "adaptive_avg_pool", "pixel_shuffle", "ldpv2", "tokenpacker"])
def test_expanded_image_tokens_equal_the_models_scattered_features_for_many_sizes(projector):
    processor, model = processor_and_model(projector_type=projector)
    prompt = processor.apply_chat_template(USER_IMAGE, add_generation_prompt=True)
    for size in SIZES:
        inputs = processor(images=image(size), text=prompt, return_tensors="pt")
        features = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
        assert int((inputs["input_ids"] == processor.image_token_id).sum()) == features.pooler_output[0].shape[0], size
    assert torch.isfinite(model(**inputs).logits).all()


@pytest.mark.parametrize("aspect_ratio", ["anyres", "anyres_max_9", "pad"])
@pytest.mark.parametrize("tile,grids", [(336, (24, 12)), (384, (27, 14, 13))])
def test_real_size_counts_come_from_the_models_layout(tile, grids, aspect_ratio):
    pinpoints = [[tile * h, tile * w] for h in range(1, 7) for w in range(1, 7)]
    for grid in grids:
        processor = LlavaVRProcessor(
            LlavaNextImageProcessorPil(
                size={"shortest_edge": tile}, crop_size={"height": tile, "width": tile}, image_grid_pinpoints=pinpoints
            ),
            build_tiny_tokenizer(),
            num_image_tokens=grid * grid,
            vision_aspect_ratio=aspect_ratio,
        )
        counts = processor._get_num_multimodal_tokens(image_sizes=SIZES)["num_image_tokens"]
        assert counts == [anyres_layout(s, pinpoints, tile, grid, aspect_ratio).num_tokens for s in SIZES]
    if aspect_ratio == "pad":
        assert counts[0] == grids[-1] ** 2 + 1


def test_matches_transformers_llava_next_processor_ids_and_pixels():
    config = tiny_config(projector_type="mlp", vision_aspect_ratio="anyres", multi_image_anyres=True)
    ours = tiny_processor(config)
    theirs = LlavaNextProcessor(
        ours.image_processor, ours.tokenizer, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=ours.chat_template,
    )
    prompt = ours.apply_chat_template(USER_IMAGE, add_generation_prompt=True)
    for size in SIZES[5:14]:
        a = ours(images=image(size), text=prompt, return_tensors="pt")
        b = theirs(images=image(size), text=prompt, return_tensors="pt")
        assert torch.equal(a["input_ids"], b["input_ids"]), size
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["image_sizes"], b["image_sizes"])


def test_several_images_in_one_prompt_use_onevision_base_tiles_and_match_the_model():
    processor, model = processor_and_model("onevision")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[image((60, 100)), image((90, 40))], text=prompt, return_tensors="pt")
    assert inputs["batch_num_images"].tolist() == [2]
    per_image = model.config.num_image_tokens_per_tile + 1
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == 2 * per_image
    assert torch.isfinite(model(**inputs).logits).all()


@pytest.mark.parametrize("side", ["left", "right"])
def test_chat_template_batches_with_images_text_only_and_padding(side):
    processor, model = processor_and_model()
    processor.tokenizer.padding_side = side
    conversations = [
        [{"role": "user", "content": [{"type": "image", "image": image((60, 100))}, {"type": "text", "text": "Total?"}]}],
        [{"role": "user", "content": [{"type": "text", "text": "Just text, please."}]}],
        [{"role": "user", "content": [{"type": "image", "image": image((120, 40))},
                                      {"type": "image", "image": image((40, 40))}, {"type": "text", "text": "Two?"}]}],
    ]
    inputs = processor.apply_chat_template(
        conversations, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt", padding=True
    )
    assert inputs["pixel_values"].shape[0] == 3 and inputs["batch_num_images"].tolist() == [1, 0, 2]
    pad_column = 0 if side == "left" else -1
    assert (inputs["attention_mask"][:, pad_column] == 0).any()
    generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    texts = processor.post_process_image_text_to_text(generated[:, inputs["input_ids"].shape[1] :])
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    decoded = processor.batch_decode(inputs["input_ids"], skip_special_tokens=False)
    assert decoded[1].count("<image>") == 0 and "<|im_start|>assistant\n" in decoded[1]


def test_assistant_mask_covers_exactly_the_assistant_replies():
    processor, _ = processor_and_model()
    messages = USER_IMAGE + [{"role": "assistant", "content": [{"type": "text", "text": "42 in total"}]}]
    out = processor.apply_chat_template(
        [messages], tokenize=True, return_dict=True, return_assistant_tokens_mask=True, images=[[image((60, 100))]],
    )
    ids, mask = out["input_ids"][0], out["assistant_masks"][0]
    assistant = processor.tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert assistant == "42 in total<|im_end|>"
    assert not any(m for i, m in zip(ids, mask) if i == processor.image_token_id)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "I;16", "I", "F", "CMYK", "1"])
def test_odd_image_modes_are_accepted(mode):
    processor, model = processor_and_model()
    prompt = processor.apply_chat_template(USER_IMAGE, add_generation_prompt=True)
    picture = image((30, 50), "L").convert(mode) if mode in ("I;16", "I", "F", "1") else image((30, 50), mode)
    inputs = processor(images=picture, text=prompt, return_tensors="pt")
    assert inputs["pixel_values"].shape[2] == 3
    assert torch.isfinite(model(**inputs).logits).all()


def test_placeholder_and_image_count_mismatch_raise():
    processor, _ = processor_and_model()
    with pytest.raises(ValueError, match="2 <image> placeholders.*1 images"):
        processor(images=[image((40, 40))], text="<image><image> two?")
    with pytest.raises(ValueError, match="placeholders"):
        processor(images=[image((40, 40)), image((40, 40))], text="<image> one?")
    with pytest.raises(ValueError, match="no images"):
        processor(text="<image> where is it?")


def test_truncation_through_image_tokens_raises_with_the_length_needed():
    processor, _ = processor_and_model()
    prompt = processor.apply_chat_template(USER_IMAGE, add_generation_prompt=True)
    with pytest.raises(ValueError, match="truncation would cut through image tokens.*at least"):
        processor(images=image((60, 100)), text=prompt, truncation=True, max_length=8)
    full = processor(images=image((60, 100)), text=prompt)
    kept = processor(images=image((60, 100)), text=prompt, truncation=True, max_length=len(full["input_ids"][0]))
    assert kept["input_ids"] == full["input_ids"]


def test_save_and_load_round_trip_gives_the_same_outputs(tmp_path):
    processor, _ = processor_and_model("onevision")
    processor.save_pretrained(tmp_path)
    for name in ("processor_config.json", "chat_template.jinja", "tokenizer.json", "processing_llava_vr.py"):
        assert (tmp_path / name).exists(), name
    loaded = LlavaVRProcessor.from_pretrained(tmp_path)
    assert (loaded.num_image_tokens, loaded.vision_aspect_ratio) == (processor.num_image_tokens, processor.vision_aspect_ratio)
    prompt = processor.apply_chat_template(USER_IMAGE, add_generation_prompt=True)
    a, b = (p(images=image((60, 100)), text=prompt, return_tensors="pt") for p in (processor, loaded))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
