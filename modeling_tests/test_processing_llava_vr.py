"""LlavaVRProcessor: counts from the model's own layout (and Transformers' formulas), Transformers parity, OneVision
multi-image rules, chat template and assistant masks, odd images, bad input, save/load."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer, LlavaNextProcessor, LlavaOnevisionProcessor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from llava_vr.data.image_processors import anyres_image_processor
from llava_vr.data.tokenizers import CHAT_SPECIAL_TOKENS
from llava_vr.packing_llava_vr import anyres_layout, grid_pinpoints
from llava_vr.processing_llava_vr import DEFAULT_CHAT_TEMPLATE, MARKED_CONTROL_TOKEN, LlavaVRProcessor
from llava_vr.testing_utils import TILE, build_tiny_tokenizer, processor_and_model

SMALL_PINPOINTS = grid_pinpoints(TILE, 2, 3)  # 56-px tiles of 4 x 4 patches of 14 px: 16 tokens per tile, fast
CLIP_PINPOINTS = grid_pinpoints(336, 6, 6)
SIGLIP_PINPOINTS = grid_pinpoints(384, 6, 6)

# odd shapes, then sizes around aspect-ratio edges of the pinpoints (exact 1:1, 1:2, 2:3, ... and one pixel off), of
# the unpadding rounding, and of the anyres_max_9 down-interpolation threshold
SIZES = [
    (1, 1),
    (1, 3000),
    (3000, 1),
    (4000, 20),
    (20, 4000),
    (1, 2),
    (2, 1),
    (33, 97),
    (97, 33),
    (57, 111),
    (111, 57),
    (56, 56),
    (56, 168),
    (168, 56),
    (112, 112),
    (113, 112),
    (112, 113),
    (336, 336),
    (336, 672),
    (336, 673),
    (335, 672),
    (672, 336),
    (673, 336),
    (1008, 1008),
    (1008, 1009),
    (640, 480),
    (480, 640),
    (500, 499),
    (777, 333),
    (1080, 1920),
    (1920, 1080),
    (2016, 2016),
    (2304, 2304),
    (384, 1152),
    (385, 1152),
    (1000, 1500),
    (1500, 1000),
    (4000, 4000),
]
PIXEL_SIZES = [(1, 1), (1, 3000), (3000, 1), (4000, 20), (20, 4000), (33, 97), (60, 100), (100, 60), (111, 57),
               (112, 112), (113, 112), (168, 56), (56, 168), (224, 336), (500, 499), (640, 480)]  # fmt: skip
IMAGE_ID = 3  # the tiny tokenizer's `<image>`


def image(size, mode="RGB"):
    height, width = size
    rng = np.random.default_rng(height * 7919 + width)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).convert(mode)


def next_image_processor(tile=TILE, pinpoints=None):
    return anyres_image_processor("next", tile, pinpoints or grid_pinpoints(tile, 2, 3))


def make_processor(kind="next", tile=TILE, grid=4, pinpoints=None, **kwargs):
    image_processor = anyres_image_processor(kind, tile, pinpoints or grid_pinpoints(tile, 2, 3))
    return LlavaVRProcessor(image_processor, build_tiny_tokenizer(), num_image_tokens=grid * grid, **kwargs)


def image_runs(input_ids):
    """Lengths of the runs of image tokens in one row of ids, in order."""
    ids = np.asarray(input_ids)
    is_image = np.concatenate([[0], (ids == IMAGE_ID).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(is_image))
    return (edges[1::2] - edges[0::2]).tolist()


# ---- counts ---------------------------------------------------------------------------------------------------------
COUNT_CONFIGS = [  # (image processor, tile, pinpoints, tokens per tile): CLIP-336 `mlp` / pooled, SigLIP-384 variants
    ("next", 336, CLIP_PINPOINTS, 576),
    ("next", 336, CLIP_PINPOINTS, 144),
    ("onevision", 384, SIGLIP_PINPOINTS, 729),
    ("onevision", 384, SIGLIP_PINPOINTS, 196),
    ("onevision", 384, SIGLIP_PINPOINTS, 169),
]


def transformers_count(kind, tile, pinpoints, tokens, aspect_ratio, size):
    """Transformers' own, independent arithmetic: LLaVA-NeXT's for `anyres`, LLaVA-OneVision's for `anyres_max_N`
    (OneVision's processor cannot be built without torchvision, so its counting method runs on a bare instance)."""
    grid = int(tokens**0.5)
    image_processor = anyres_image_processor(kind, tile, pinpoints)
    if aspect_ratio == "anyres":
        theirs = LlavaNextProcessor(
            image_processor, build_tiny_tokenizer(), patch_size=tile // grid, vision_feature_select_strategy="full"
        )
        return theirs._get_num_multimodal_tokens(image_sizes=[size])["num_image_tokens"][0]
    theirs = LlavaOnevisionProcessor.__new__(LlavaOnevisionProcessor)
    theirs.image_processor, theirs.num_image_tokens, theirs.vision_aspect_ratio = image_processor, tokens, aspect_ratio
    return theirs._get_number_of_features(*size, tile, tile)


@pytest.mark.parametrize("aspect_ratio", ["anyres", "anyres_max_9"])
@pytest.mark.parametrize("kind,tile,pinpoints,tokens", COUNT_CONFIGS)
def test_counts_equal_the_shared_layout_and_transformers_own_formulas(kind, tile, pinpoints, tokens, aspect_ratio):
    processor = make_processor(kind, tile, int(tokens**0.5), pinpoints, vision_aspect_ratio=aspect_ratio)
    assert processor.tile_size == tile and processor.token_grid**2 == tokens
    counts = processor._get_num_multimodal_tokens(image_sizes=SIZES)
    expected = [anyres_layout(s, pinpoints, tile, processor.token_grid, aspect_ratio).num_tokens for s in SIZES]
    assert counts["num_image_tokens"] == expected
    assert counts["num_image_patches"] == [1] * len(SIZES)
    assert expected == [transformers_count(kind, tile, pinpoints, tokens, aspect_ratio, s) for s in SIZES]
    if aspect_ratio == "anyres_max_9":  # the cap really kicks in for big images
        assert any(anyres_layout(s, pinpoints, tile, processor.token_grid, aspect_ratio).interpolated for s in SIZES)


def test_pad_aspect_ratio_counts_base_tile_and_newline_only():
    processor = make_processor("next", 336, 12, CLIP_PINPOINTS, vision_aspect_ratio="pad")
    assert processor._get_num_multimodal_tokens(image_sizes=SIZES)["num_image_tokens"] == [145] * len(SIZES)


@pytest.mark.parametrize("aspect_ratio", ["anyres", "anyres_max_9"])
@pytest.mark.parametrize("kind", ["next", "onevision"])
def test_each_image_expands_to_its_layout_count_with_real_pixels(kind, aspect_ratio):
    processor = make_processor(kind, vision_aspect_ratio=aspect_ratio)
    prompts = [f"<image>size {h}x{w}" for h, w in PIXEL_SIZES]
    images = [image(s) for s in PIXEL_SIZES]
    out = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    layouts = [anyres_layout(s, SMALL_PINPOINTS, TILE, 4, aspect_ratio) for s in PIXEL_SIZES]
    assert [image_runs(row) for row in out["input_ids"]] == [[layout.num_tokens] for layout in layouts]
    assert out["pixel_values"].shape == (len(images), max(layout.num_tiles for layout in layouts), 3, TILE, TILE)
    assert out["image_sizes"].tolist() == [list(s) for s in PIXEL_SIZES]
    assert out["batch_num_images"].tolist() == [1] * len(images)
    for pixels, layout in zip(
        out["pixel_values"], layouts, strict=False
    ):  # tiles beyond the layout's are batch padding
        assert pixels[: layout.num_tiles].abs().flatten(1).sum(-1).gt(0).all()
        assert not pixels[layout.num_tiles :].any()


@pytest.mark.parametrize("grid,aspect_ratio", [(24, "anyres"), (12, "anyres_max_9")])
def test_clip_336_tiles_expand_to_layout_counts(grid, aspect_ratio):
    processor = make_processor("next", 336, grid, CLIP_PINPOINTS, vision_aspect_ratio=aspect_ratio)
    sizes = [(1, 1), (1, 3000), (4000, 20), (200, 700), (400, 300)]
    out = processor(images=[image(s) for s in sizes], text=["<image>"] * len(sizes), padding=True)
    expected = [[anyres_layout(s, CLIP_PINPOINTS, 336, grid, aspect_ratio).num_tokens] for s in sizes]
    assert [image_runs(row) for row in out["input_ids"]] == expected
    assert np.asarray(out["pixel_values"]).shape[-3:] == (3, 336, 336)


def test_expanded_tokens_match_the_models_scattered_features():
    for kind, projector in (("next", "mlp"), ("onevision", "adaptive_avg_pool")):
        processor, model = processor_and_model(kind, projector_type=projector)
        sizes = [(1, 1), (1, 3000), (4000, 20), (60, 100), (33, 97), (500, 499)]
        pictures = [image(s) for s in sizes]
        prompts = [f"<image>{i}" for i in range(len(sizes))] + ["<image>\n<image>two"]
        out = processor(images=pictures + pictures[3:5], text=prompts, padding=True, return_tensors="pt")
        features = model.model.get_image_features(
            out["pixel_values"], out["image_sizes"], batch_num_images=out["batch_num_images"]
        ).pooler_output
        runs = [run for row in out["input_ids"] for run in image_runs(row)]
        assert runs == [f.shape[0] for f in features], (kind, projector)
        assert runs[-2:] == [model.config.num_image_tokens_per_tile + 1] * 2


def test_plain_and_auto_image_processor_classes_work_without_torchvision(tmp_path):
    """`LlavaNextImageProcessor` / `LlavaOnevisionImageProcessor` / `AutoImageProcessor` fall back to the PIL backend
    when torchvision is missing (and are the torchvision backend otherwise): the processor works with either."""
    from transformers import AutoImageProcessor, LlavaNextImageProcessor, LlavaOnevisionImageProcessor

    pictures, prompts = [image((60, 100)), image((500, 499))], ["<image>a", "<image>b"]
    for plain, pil in (
        (LlavaNextImageProcessor, "next"),
        (LlavaOnevisionImageProcessor, "onevision"),
    ):
        reference = anyres_image_processor(pil, TILE, SMALL_PINPOINTS)
        reference.save_pretrained(tmp_path)
        for image_processor in (plain(**reference.to_dict()), AutoImageProcessor.from_pretrained(tmp_path)):
            ours = LlavaVRProcessor(image_processor, build_tiny_tokenizer(), num_image_tokens=16)
            theirs = LlavaVRProcessor(reference, build_tiny_tokenizer(), num_image_tokens=16)
            a, b = (p(images=pictures, text=prompts, padding=True, return_tensors="pt") for p in (ours, theirs))
            assert torch.equal(a["input_ids"], b["input_ids"]) and a["pixel_values"].shape == b["pixel_values"].shape


# ---- parity with Transformers' LLaVA-NeXT processor -----------------------------------------------------------------
def test_matches_transformers_llava_next_processor_ids_and_pixels():
    ours = make_processor("next", vision_aspect_ratio="anyres", multi_image_anyres=True)
    theirs = LlavaNextProcessor(
        ours.image_processor, ours.tokenizer, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=ours.chat_template,
    )  # fmt: skip
    sizes = PIXEL_SIZES[4:14]
    prompts = [f"<|im_start|>user\n<image>\nWhat is {h}x{w}?<|im_end|>\n" for h, w in sizes]
    prompts.append("<|im_start|>user\n<image>\n<image>\nCompare.<|im_end|>\n")
    images = [image(s) for s in sizes] + [image((90, 40), "L"), image((40, 90), "RGBA")]
    a = ours(images=images, text=prompts, padding=True, return_tensors="pt")
    b = theirs(images=images, text=prompts, padding=True, return_tensors="pt")
    assert set(b) <= set(a) and a["batch_num_images"].tolist() == [1] * len(sizes) + [2]
    for key in b:
        assert torch.equal(a[key], b[key]), key


# ---- OneVision multi-image rules ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["next", "onevision"])
def test_images_sharing_a_prompt_get_base_tile_plus_newline(kind):
    processor = make_processor(kind)
    prompts = ["<image>\n<image>\nSame?", "<image>\nAlone.", "No image."]
    sizes = [(60, 100), (90, 40), (500, 499)]
    out = processor(images=[image(s) for s in sizes], text=prompts, padding=True, return_tensors="pt")
    assert out["batch_num_images"].tolist() == [2, 1, 0]
    alone = anyres_layout(sizes[2], SMALL_PINPOINTS, TILE, 4, "anyres_max_9").num_tokens
    assert [image_runs(row) for row in out["input_ids"]] == [[17, 17], [alone], []]
    if kind == "onevision":  # OneVision's image processor encodes a shared image by one (padded-to-square) tile
        assert not out["pixel_values"][:2, 1:].any() and out["pixel_values"][2, 1:].any()


def test_multi_image_anyres_tiles_every_image_even_with_the_onevision_image_processor():
    processor = make_processor("onevision", multi_image_anyres=True)
    sizes = [(60, 100), (90, 40)]
    out = processor(images=[image(s) for s in sizes], text="<image>\n<image>Same?", return_tensors="pt")
    layouts = [anyres_layout(s, SMALL_PINPOINTS, TILE, 4, "anyres_max_9") for s in sizes]
    assert image_runs(out["input_ids"][0]) == [layout.num_tokens for layout in layouts]
    assert out["pixel_values"].shape[1] == max(layout.num_tiles for layout in layouts) > 1


@pytest.mark.parametrize("multi_image_anyres", [False, True])
@pytest.mark.parametrize("kind", ["next", "onevision"])
def test_multimodal_token_counts_with_batch_num_images_equal_the_expanded_prompts(kind, multi_image_anyres):
    """What vLLM reserves per image (`_get_num_multimodal_tokens`) is what the processor expands it into."""
    processor = make_processor(kind, multi_image_anyres=multi_image_anyres)
    prompts = ["<image>\n<image>\nSame?", "<image>\nAlone.", "No image.", "<image>\n<image>\n<image>\nthree"]
    sizes = [(60, 100), (90, 40), (500, 499), (112, 113), (30, 200), (168, 56)]
    out = processor(images=[image(s) for s in sizes], text=prompts, padding=True, return_tensors="pt")
    expanded = [run for row in out["input_ids"] for run in image_runs(row)]
    counts = processor._get_num_multimodal_tokens(image_sizes=sizes, batch_num_images=[2, 1, 0, 3])
    assert counts["num_image_tokens"] == expanded
    assert counts["num_image_patches"] == [1] * len(sizes)
    tiled = [multi_image_anyres or n == 1 for n in (2, 2, 1, 3, 3, 3)]
    layouts = [
        anyres_layout(s, SMALL_PINPOINTS, TILE, 4, "anyres_max_9", t) for s, t in zip(sizes, tiled, strict=False)
    ]
    assert expanded == [layout.num_tokens for layout in layouts]
    if not multi_image_anyres:  # images sharing a prompt: base tile + newline only
        assert [c for c, t in zip(expanded, tiled, strict=False) if not t] == [17] * 5


def test_multimodal_token_counts_without_batch_num_images_count_each_image_alone():
    processor = make_processor("onevision")
    sizes = [(60, 100), (90, 40), (500, 499)]
    alone = processor._get_num_multimodal_tokens(image_sizes=sizes)["num_image_tokens"]
    assert (
        alone == processor._get_num_multimodal_tokens(image_sizes=sizes, batch_num_images=[1, 1, 1])["num_image_tokens"]
    )
    assert alone == [anyres_layout(s, SMALL_PINPOINTS, TILE, 4, "anyres_max_9").num_tokens for s in sizes]
    assert processor._get_num_multimodal_tokens(image_sizes=sizes, batch_num_images=[3])["num_image_tokens"] == [17] * 3
    with pytest.raises(ValueError, match="do not add up to 3 images"):
        processor._get_num_multimodal_tokens(image_sizes=sizes, batch_num_images=[2])


def test_flat_and_nested_images_give_the_same_outputs():
    processor = make_processor("onevision")
    pictures = [image((60, 100)), image((90, 40)), image((30, 30))]
    prompts = ["<image><image>two", "<image>one", "none"]
    flat = processor(images=pictures, text=prompts, padding=True, return_tensors="pt")
    nested = processor(images=[pictures[:2], pictures[2:], []], text=prompts, padding=True, return_tensors="pt")
    assert flat.keys() == nested.keys() and all(torch.equal(flat[k], nested[k]) for k in flat)


def test_text_only_and_image_only_calls():
    processor = make_processor()
    out = processor(text=["Just text.", "More text, longer."], padding=True, return_tensors="pt")
    assert set(out) == {"input_ids", "attention_mask"} and out["input_ids"].shape[0] == 2
    pixels = processor(images=[image((60, 100)), image((30, 30))], return_tensors="pt")
    assert "input_ids" not in pixels and pixels["pixel_values"].shape[0] == 2 and pixels["image_sizes"].shape == (2, 2)


# ---- chat template --------------------------------------------------------------------------------------------------
def test_chat_template_renders_qwen2_format_with_image_lines():
    processor = make_processor()
    assert processor.chat_template == DEFAULT_CHAT_TEMPLATE
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "No."}]},
        {"role": "user", "content": "Why?"},
    ]
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<image>\n<image>\nSame?<|im_end|>\n"
        "<|im_start|>assistant\nNo.<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert processor.apply_chat_template(messages[3:]) == "<|im_start|>user\nWhy?<|im_end|>\n"  # no default system


@pytest.mark.parametrize("side", ["left", "right"])
def test_chat_template_batch_with_images_in_messages_text_only_and_padding(side):
    processor = make_processor("onevision")
    processor.tokenizer.padding_side = side
    conversations = [
        [{"role": "user", "content": [{"type": "image", "image": image((60, 100))},
                                      {"type": "text", "text": "Total?"}]}],
        [{"role": "user", "content": [{"type": "text", "text": "Just text, please."}]}],
        [{"role": "user", "content": [{"type": "image", "image": image((120, 40), "P")},
                                      {"type": "image", "image": image((40, 40), "L")},
                                      {"type": "text", "text": "Two?"}]}],
    ]  # fmt: skip
    out = processor.apply_chat_template(
        conversations,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
    assert out["batch_num_images"].tolist() == [1, 0, 2] and out["pixel_values"].shape[0] == 3
    tiled = anyres_layout((60, 100), SMALL_PINPOINTS, TILE, 4, "anyres_max_9").num_tokens
    assert [image_runs(row) for row in out["input_ids"]] == [[tiled], [], [17, 17]]
    pad_column = 0 if side == "left" else -1
    assert out["attention_mask"][:, pad_column].tolist() == [1, 0, 0]  # the tiled image's prompt is the longest
    assert (out["input_ids"][1][out["attention_mask"][1] == 0] == processor.tokenizer.pad_token_id).all()
    texts = processor.batch_decode(out["input_ids"], skip_special_tokens=True)
    assert texts[1] == "user\nJust text, please.\nassistant\n"
    assert processor.decode(out["input_ids"][1], skip_special_tokens=False).count("<|im_start|>assistant\n") == 1
    answer = processor.tokenizer(["42<|im_end|>", "yes<|im_end|>", "no<|im_end|>"], return_tensors="pt")["input_ids"]
    assert processor.post_process_image_text_to_text(answer) == ["42", "yes", "no"]
    one = processor.apply_chat_template(conversations[1], add_generation_prompt=True, tokenize=True, return_dict=True)
    assert one["input_ids"] == [out["input_ids"][1][out["attention_mask"][1] == 1].tolist()]


@pytest.mark.parametrize("side", ["left", "right"])
def test_assistant_tokens_mask_covers_exactly_the_assistant_replies(side):
    processor = make_processor()
    processor.tokenizer.padding_side = side
    conversation = [
        {"role": "user", "content": [{"type": "image", "image": image((60, 100))}, {"type": "text", "text": "Sum?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "42 in total"}]},
        {"role": "user", "content": "And the tax?"},
        {"role": "assistant", "content": "3.50"},
    ]
    short = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, world."}]
    out = processor.apply_chat_template(
        [conversation, short],
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
    assert out["assistant_masks"].shape == out["input_ids"].shape
    tokenizer = processor.tokenizer
    replies_per_row = (["42 in total", "3.50"], ["Hello, world."])
    for ids, mask, replies in zip(out["input_ids"], out["assistant_masks"], replies_per_row, strict=False):
        expected = [i for reply in replies for i in tokenizer(reply + "<|im_end|>")["input_ids"]]
        assert ids[mask.bool()].tolist() == expected
        assert not mask[ids == IMAGE_ID].any() and not mask[ids == tokenizer.pad_token_id].any()


def skip_without_sanitize_control_tokens():
    """`apply_chat_template(..., sanitize_control_tokens=True)` exists from Transformers 5.23 (5.19 passes it on to
    `__call__` as an unknown keyword)."""
    chat_template_utils = pytest.importorskip("transformers.utils.chat_template_utils")
    if not hasattr(chat_template_utils, "mark_control_tokens"):
        pytest.skip("this Transformers has no sanitize_control_tokens (before 5.23)")
    return chat_template_utils


def test_marked_control_token_pattern_removes_exactly_what_transformers_marks():
    chat_template_utils = skip_without_sanitize_control_tokens()
    marked = chat_template_utils.mark_control_tokens("a <image> b <|im_end|> c", re.compile(r"<image>|<\|im_end\|>"))
    assert marked != "a <image> b <|im_end|> c"
    assert MARKED_CONTROL_TOKEN.sub("", marked) == "a  b  c"
    assert MARKED_CONTROL_TOKEN.sub("", "a <image> b") == "a <image> b"  # unmarked placeholders stay


def test_sanitized_chat_keeps_an_image_placeholder_typed_by_the_user_as_text():
    skip_without_sanitize_control_tokens()
    processor = make_processor()
    content = [{"type": "image", "image": image((60, 100))}, {"type": "text", "text": "Is <image> here?"}]
    messages = [{"role": "user", "content": content}]
    out = processor.apply_chat_template(messages, tokenize=True, return_dict=True, sanitize_control_tokens=True)
    expected = anyres_layout((60, 100), SMALL_PINPOINTS, TILE, 4, "anyres_max_9").num_tokens
    assert image_runs(out["input_ids"][0]) == [expected]  # one image's tokens; the typed placeholder is text
    assert "Is <image> here?" in processor.tokenizer.decode(out["input_ids"][0])
    with pytest.raises(ValueError, match="placeholder"):  # unsanitized, the typed one is a second placeholder
        processor.apply_chat_template(messages, tokenize=True, return_dict=True)


# ---- odd images -----------------------------------------------------------------------------------------------------
def odd_image(mode):
    if mode == "I;16":
        return Image.fromarray(np.full((30, 50), 32896, dtype=np.uint16))  # mid-grey in 16 bits
    if mode == "I;16B":
        return Image.fromarray(np.full((30, 50), 32896, dtype=np.uint16)).convert("I").convert("I;16B")
    if mode == "I":
        return Image.fromarray(np.full((30, 50), 32896, dtype=np.int32), mode="I")
    if mode == "F":
        return Image.fromarray(np.full((30, 50), 128 / 255, dtype=np.float32), mode="F")
    if mode == "La":
        return Image.new("La", (50, 30), (128, 255))
    return Image.new("L", (50, 30), 128).convert(mode)


@pytest.mark.parametrize("mode", ["L", "LA", "La", "P", "PA", "RGBA", "CMYK", "1", "I;16", "I;16B", "I", "F"])
def test_odd_image_modes_are_accepted(mode):
    processor = make_processor()
    picture = odd_image(mode)
    out = processor(images=picture, text="<image>What is it?", return_tensors="pt")
    assert out["pixel_values"].shape[2] == 3 and torch.isfinite(out["pixel_values"]).all()
    assert image_runs(out["input_ids"][0]) == [anyres_layout((30, 50), SMALL_PINPOINTS, TILE, 4).num_tokens]
    if mode in ("I;16", "I;16B", "I", "F", "La"):  # high-bit modes are rescaled, not clipped to white
        grey = processor(images=Image.new("L", (50, 30), 128), text="<image>What is it?", return_tensors="pt")
        assert torch.allclose(out["pixel_values"], grey["pixel_values"], atol=0.02)


@pytest.mark.parametrize(
    "picture",
    [
        np.full((30, 50), 128, np.uint8),
        np.full((30, 50, 3), 32896, np.uint16),
        torch.full((30, 50), 128, dtype=torch.uint8),
    ],
    ids=["numpy-greyscale", "numpy-uint16", "torch-greyscale"],
)
def test_greyscale_and_16_bit_arrays_are_accepted(picture):
    processor = make_processor()
    out = processor(images=picture, text="<image>", return_tensors="pt")
    grey = processor(images=Image.new("L", (50, 30), 128), text="<image>", return_tensors="pt")
    assert torch.allclose(out["pixel_values"], grey["pixel_values"], atol=0.02)


@pytest.mark.parametrize("size", [(1, 1), (1, 3000), (4000, 20)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", ["next", "onevision"])
def test_extreme_image_sizes_are_accepted(kind, size):
    processor = make_processor(kind)
    out = processor(images=image(size, "L"), text="<image>", return_tensors="pt")
    layout = anyres_layout(size, SMALL_PINPOINTS, TILE, 4)
    assert image_runs(out["input_ids"][0]) == [layout.num_tokens]
    assert out["pixel_values"].shape == (1, layout.num_tiles, 3, TILE, TILE)


# ---- bad input ------------------------------------------------------------------------------------------------------
def test_placeholder_and_image_count_mismatch_raise_naming_both_counts():
    processor = make_processor()
    with pytest.raises(ValueError, match=r"2 <image> placeholders in the text \(per prompt: \[2\]\) but 1 images"):
        processor(images=[image((40, 40))], text="<image><image> two?")
    with pytest.raises(ValueError, match=r"1 <image> placeholders .*\[0, 1\]\) but 3 images"):
        processor(images=[image((40, 40))] * 3, text=["none", "<image> one?"])
    with pytest.raises(ValueError, match=r"placeholders per prompt \[1, 1\] .* images per prompt \[2, 0\]"):
        processor(images=[[image((40, 40)), image((40, 40))], []], text=["<image>a", "<image>b"])
    with pytest.raises(ValueError, match=r"1 <image> placeholders .* no images"):
        processor(text="<image> where is it?")
    with pytest.raises(ValueError, match=r"0 <image> placeholders .* 1 images"):
        processor(images=image((40, 40)), text="no placeholder")


@pytest.mark.parametrize("side", ["right", "left"])
def test_truncation_through_image_tokens_raises_with_the_max_length_needed(side):
    processor = make_processor()
    processor.tokenizer.truncation_side = side
    prompt = "Some words before. <image> And a long question after the image, with words, to be cut."
    full = processor(images=image((60, 100)), text=prompt)["input_ids"][0]
    positions = np.flatnonzero(np.asarray(full) == IMAGE_ID)
    needed = positions[-1] + 1 if side == "right" else len(full) - positions[0]
    assert needed < len(full)
    with pytest.raises(ValueError, match=f"truncation would cut through image tokens.*at least {needed}"):
        processor(images=image((60, 100)), text=prompt, truncation=True, max_length=needed - 1)
    kept = processor(images=image((60, 100)), text=prompt, truncation=True, max_length=needed)["input_ids"][0]
    assert len(kept) == needed and image_runs(kept) == image_runs(full)


def test_invalid_constructor_arguments_raise():
    tokenizer, image_processor = build_tiny_tokenizer(), next_image_processor()
    with pytest.raises(ValueError, match="needs num_image_tokens"):
        LlavaVRProcessor(image_processor, tokenizer)
    with pytest.raises(ValueError, match="not the size of a square token grid"):
        LlavaVRProcessor(image_processor, tokenizer, num_image_tokens=150)
    with pytest.raises(ValueError, match="vision_aspect_ratio"):
        LlavaVRProcessor(image_processor, tokenizer, num_image_tokens=144, vision_aspect_ratio="square")
    with pytest.raises(ValueError, match="has no '<img>' token"):
        LlavaVRProcessor(image_processor, tokenizer_without_image_token(), num_image_tokens=144, image_token="<img>")
    with pytest.raises(ValueError, match="needs an AnyRes image processor"):
        LlavaVRProcessor(CLIPImageProcessorPil(), tokenizer, num_image_tokens=144)
    with pytest.raises(ValueError, match="image-only"):
        make_processor()(text="hi", videos=[np.zeros((2, 8, 8, 3), np.uint8)])


def tokenizer_without_image_token():
    tokenizer = build_tiny_tokenizer()
    tokenizer.image_token = None
    return tokenizer


# ---- save / load ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["next", "onevision"])
def test_save_and_from_pretrained_round_trip_gives_the_same_outputs(kind, tmp_path):
    import llava_vr  # noqa: F401  (registers AutoProcessor)

    processor = make_processor(kind, vision_aspect_ratio="anyres", multi_image_anyres=True)
    processor.save_pretrained(tmp_path)
    for name in ("processor_config.json", "chat_template.jinja", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert {k: saved[k] for k in ("num_image_tokens", "vision_aspect_ratio", "multi_image_anyres", "image_token")} == {
        "num_image_tokens": 16, "vision_aspect_ratio": "anyres", "multi_image_anyres": True, "image_token": "<image>"
    }  # fmt: skip
    assert (tmp_path / "chat_template.jinja").read_text() == DEFAULT_CHAT_TEMPLATE
    conversation = [{"role": "user", "content": [{"type": "image", "image": image((60, 100))},
                                                 {"type": "image", "image": image((30, 80))},
                                                 {"type": "text", "text": "Compare."}]}]  # fmt: skip
    outputs = []
    for loaded in (processor, LlavaVRProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert isinstance(loaded, LlavaVRProcessor) and type(loaded.image_processor) is type(processor.image_processor)
        assert (loaded.num_image_tokens, loaded.vision_aspect_ratio, loaded.multi_image_anyres) == (16, "anyres", True)
        outputs.append(loaded.apply_chat_template(conversation, tokenize=True, return_dict=True, return_tensors="pt"))
    for other in outputs[1:]:
        assert other.keys() == outputs[0].keys() and all(torch.equal(other[k], outputs[0][k]) for k in other)


# ---- the tiny tokenizer ---------------------------------------------------------------------------------------------
def test_tiny_tokenizer_special_tokens_and_round_trip(tmp_path):
    tokenizer = build_tiny_tokenizer(tmp_path)
    assert tokenizer.convert_tokens_to_ids(CHAT_SPECIAL_TOKENS) == [0, 1, 2, 3]
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.image_token, tokenizer.image_token_id) == (
        0, 2, "<image>", 3
    )  # fmt: skip
    assert 300 <= len(tokenizer) <= 500
    text = "<|im_start|>user\n<image>\nWhat is the total? é 中<|im_end|>\n"
    ids = tokenizer(text)["input_ids"]
    assert ids[:1] == [1] and 3 in ids and tokenizer.decode(ids) == text
    assert AutoTokenizer.from_pretrained(tmp_path)(text)["input_ids"] == ids
