"""Video (LLaVA-OneVision's layout) and Vision Remember on video frames: processor inputs and token counts, parity
with Transformers' LLaVA-OneVision on `pixel_values_videos`, VR reading each token's own frame, mixed prompts,
generation with the cache and left padding, conversion, and bad input."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

from llava_vr import LlavaVRForConditionalGeneration, LlavaVRProcessor
from llava_vr.data.image_processors import anyres_image_processor
from llava_vr.modeling_llava_vr import video_vision_remember_inputs
from llava_vr.packing_llava_vr import video_num_tokens
from llava_vr.testing_utils import (
    build_tiny_tokenizer,
    left_pad,
    tiny_config,
    tiny_model,
    tiny_text_config,
    tiny_vision_config,
)
from llava_vr.video_processing_llava_vr import load_video, sample_frame_indices

SIGLIP_TILE = 42  # 3 x 3 patches of 14 px: `mlp` 9 tokens per frame before pooling, 2 x 2 = 4 after (stride 2)


def video_tokenizer():
    """The tiny tokenizer with `<video>` added as a special token (the last id)."""
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<video>"]})
    return tokenizer


def video_processor_and_model(kind="siglip", seed=0, perturb_vr=True, **overrides):
    """A tiny model whose vocabulary, `<image>` and `<video>` ids match `video_tokenizer()`, and its processor
    (SigLIP on 42-px tiles with OneVision's image processor, or CLIP on 56-px tiles with LLaVA-NeXT's)."""
    tokenizer = video_tokenizer()
    tile = SIGLIP_TILE if kind == "siglip" else 56
    config = tiny_config(
        kind,
        image_size=tile,
        text_config=tiny_text_config(vocab_size=len(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        **overrides,
    )
    model = tiny_model(config, seed=seed, perturb_vr=perturb_vr)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    image_processor = anyres_image_processor(
        "onevision" if kind == "siglip" else "next", tile, config.image_grid_pinpoints
    )
    return LlavaVRProcessor.from_model_config(config, image_processor, tokenizer), model


def random_video(frames=4, height=30, width=40, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def random_picture(seed=0, size=(60, 100)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


def chat(processor, conversations, **kwargs):
    return processor.apply_chat_template(
        conversations,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        padding=True,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Processor: inputs, sampling, token counts
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stride", [1, 2, 3, 4])
@pytest.mark.parametrize("projector_type", ["mlp", "adaptive_avg_pool"])
def test_each_video_expands_to_frames_times_pooled_grid_plus_one_newline(stride, projector_type):
    processor, model = video_processor_and_model(
        "clip", projector_type=projector_type, spatial_pool_stride=stride, perturb_vr=False
    )
    frames = 3
    g = model.config.token_grid_size  # 4 (mlp) or 2 (pooled) on 56-px CLIP tiles
    expected = frames * math.ceil(g / stride) ** 2 + 1
    inputs = processor(text=["a <video> b"], videos=[random_video(frames)], return_tensors="pt")
    assert int((inputs["input_ids"] == processor.video_token_id).sum()) == expected
    assert video_num_tokens(frames, g, stride) == expected == processor.video_num_tokens(frames)
    assert processor._get_num_multimodal_tokens(video_sizes=[(frames, 30, 40)])["num_video_tokens"] == [expected]
    features = model.get_video_features(inputs["pixel_values_videos"]).pooler_output
    assert [f.shape[0] for f in features] == [expected]
    model(**inputs)  # the model scatters exactly the processor's count (a mismatch raises)


def test_accepted_video_inputs_give_the_same_pixels(tmp_path):
    processor, _ = video_processor_and_model(perturb_vr=False)
    video = random_video(5, 20, 24)
    frames = [Image.fromarray(frame) for frame in video]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0, optimize=False)
    apng = tmp_path / "clip.png"
    frames[0].save(apng, save_all=True, append_images=frames[1:], duration=100)
    reference = processor(text="<video>", videos=[video], return_tensors="pt")["pixel_values_videos"]
    assert reference.shape == (1, 5, 3, SIGLIP_TILE, SIGLIP_TILE)
    for same in (frames, torch.from_numpy(video), torch.from_numpy(video).permute(0, 3, 1, 2), str(apng)):
        pixels = processor(text="<video>", videos=[same], return_tensors="pt")["pixel_values_videos"]
        torch.testing.assert_close(pixels, reference, rtol=0, atol=0)
    # GIF stores a palette: same frame count and shape, pixels close to the originals
    gif_pixels = processor(text="<video>", videos=[str(gif)], return_tensors="pt")["pixel_values_videos"]
    assert gif_pixels.shape == reference.shape
    assert load_video(str(gif)).shape == (5, 20, 24, 3)


def test_mp4_through_pyav_with_num_frames_and_fps(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    video = np.zeros((12, 32, 32, 3), dtype=np.uint8)
    video[:, :, :, 0] = np.arange(12)[:, None, None] * 20  # frame i: red level 20 * i
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=6)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert load_video(str(path)).shape == (12, 32, 32, 3)
    sampled = load_video(str(path), num_frames=4)  # frames 0, 3, 6, 9
    assert sampled.shape == (4, 32, 32, 3)
    np.testing.assert_allclose(sampled[:, 16, 16, 0], [0, 60, 120, 180], atol=12)
    assert load_video(str(path), fps=2).shape[0] == 4  # 12 frames at 6 fps = 2 s -> 4 frames at 2 fps
    processor, model = video_processor_and_model(perturb_vr=False)
    inputs = processor(text="<video>", videos=str(path), num_frames=4, return_tensors="pt")
    assert inputs["pixel_values_videos"].shape[:2] == (1, 4)
    model(**inputs)


def test_uniform_sampling_follows_transformers_rule():
    assert sample_frame_indices(10, num_frames=4).tolist() == [0, 2, 5, 7]  # arange(0, 10, 2.5).int()
    assert sample_frame_indices(9, num_frames=3).tolist() == [0, 3, 6]
    assert sample_frame_indices(5).tolist() == [0, 1, 2, 3, 4]
    assert sample_frame_indices(30, fps=1, video_fps=10).tolist() == [0, 10, 20]


def test_frames_already_at_tile_size_are_only_rescaled_and_normalised():
    processor, _ = video_processor_and_model(perturb_vr=False)
    video = random_video(2, SIGLIP_TILE, SIGLIP_TILE)
    pixels = processor(text="<video>", videos=[video], return_tensors="pt")["pixel_values_videos"][0]
    mean = torch.tensor(processor.image_processor.image_mean)[:, None, None]
    std = torch.tensor(processor.image_processor.image_std)[:, None, None]
    expected = (torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255 - mean) / std
    torch.testing.assert_close(pixels, expected)


def test_empty_videos_mean_no_videos_and_settings_survive_save_and_load(tmp_path):
    processor, _ = video_processor_and_model(perturb_vr=False, spatial_pool_stride=3)
    assert processor(text="hi", videos=[])["input_ids"] == processor(text="hi")["input_ids"]
    processor.num_frames = 2
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert (saved["spatial_pool_stride"], saved["num_frames"], saved["video_token"]) == (3, 2, "<video>")
    loaded = LlavaVRProcessor.from_pretrained(tmp_path)
    inputs = loaded(text="<video>", videos=[random_video(6)], return_tensors="pt")
    assert inputs["pixel_values_videos"].shape[1] == 2  # the saved default num_frames
    assert int((inputs["input_ids"] == loaded.video_token_id).sum()) == loaded.video_num_tokens(2)


# ---------------------------------------------------------------------------------------------------------------------
# Model: parity with Transformers' LLaVA-OneVision, Vision Remember on frames
# ---------------------------------------------------------------------------------------------------------------------
def onevision_pair(vision_remember_layers, seed=2):
    """Transformers' LLaVA-OneVision (tiny SigLIP, random) and a LLaVA-VR `mlp` model with its weights."""
    config = tiny_config(
        "siglip",
        image_size=SIGLIP_TILE,
        projector_type="mlp",
        vision_remember_layers=vision_remember_layers,
        video_token_index=298,
    )
    torch.manual_seed(seed)
    source = LlavaOnevisionForConditionalGeneration(
        LlavaOnevisionConfig(
            vision_config=tiny_vision_config("siglip", SIGLIP_TILE),
            text_config=tiny_text_config(),
            image_token_index=config.image_token_index,
            video_token_index=298,
            image_grid_pinpoints=config.image_grid_pinpoints,
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
        )
    ).eval()
    ours = tiny_model(config)
    missing, unexpected = ours.load_state_dict(source.state_dict(), strict=False)
    assert not unexpected and all(".vision_remember." in key for key in missing)
    return source, ours


def video_ids(config, frames, prefix=(1, 2), suffix=(3, 4)):
    return [*prefix, *[config.video_token_id] * video_num_tokens(frames, config.token_grid_size, 2), *suffix]


@pytest.mark.parametrize("vision_remember_layers", [[], [1, 4]])
def test_video_logits_and_greedy_tokens_match_transformers_llava_onevision(vision_remember_layers):
    source, ours = onevision_pair(vision_remember_layers)
    config = ours.config
    ids = [torch.tensor(video_ids(config, 3)), torch.tensor(video_ids(config, 3, prefix=(5,)))]
    inputs = left_pad(ids) | {"pixel_values_videos": torch.randn(2, 3, 3, SIGLIP_TILE, SIGLIP_TILE)}
    real = inputs["attention_mask"].bool()
    expected = source(**inputs).logits[real]
    torch.testing.assert_close(
        ours(**inputs).logits[real], expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item()
    )
    assert torch.equal(
        ours.generate(**inputs, max_new_tokens=3, do_sample=False),
        source.generate(**inputs, max_new_tokens=3, do_sample=False),
    )


def test_image_and_video_in_one_prompt_match_transformers_llava_onevision():
    source, ours = onevision_pair([1, 4])
    config = ours.config
    per_image = config.token_grid_size**2 + 1  # two images share the prompt: base tiles only
    ids = torch.tensor(
        [[1, *[config.image_token_id] * per_image, 2, *[config.image_token_id] * per_image, *video_ids(config, 2)]]
    )
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(2, 1, 3, SIGLIP_TILE, SIGLIP_TILE),
        "image_sizes": torch.tensor([[60, 100], [120, 40]]),
        "batch_num_images": torch.tensor([2]),
        "pixel_values_videos": torch.randn(1, 2, 3, SIGLIP_TILE, SIGLIP_TILE),
    }
    expected = source(**inputs).logits
    torch.testing.assert_close(ours(**inputs).logits, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize("interaction", ["sela", "deformable", "global", "global_tile"])
def test_vision_remember_on_video_reads_each_tokens_own_frame(interaction):
    """Changing frame 1's pixels changes the logits at frame 1's tokens and leaves frame 0's unchanged: VR (windows,
    saliency, self-attention, `global`) reads frame by frame, and the LLM is causal."""
    processor, model = video_processor_and_model(vision_remember_interaction=interaction)
    video = random_video(2)
    inputs = processor(text="<video>", videos=[video], return_tensors="pt")
    changed = video.copy()
    changed[1] = 255 - changed[1]
    other = processor(text="<video>", videos=[changed], return_tensors="pt")
    assert torch.equal(other["input_ids"], inputs["input_ids"])
    positions = (inputs["input_ids"][0] == model.config.video_token_id).nonzero().squeeze(1)
    per_frame = model.config.num_video_tokens_per_frame
    frame0, frame1 = positions[:per_frame], positions[per_frame : 2 * per_frame]
    with torch.no_grad():
        before, after = model(**inputs).logits[0], model(**other).logits[0]
    torch.testing.assert_close(after[frame0], before[frame0], rtol=1e-5, atol=1e-5)
    assert (after[frame1] - before[frame1]).abs().max() > 1e-3
    # and VR does act on video tokens: the same model without VR on video gives other logits
    model.config.vision_remember_video = False
    with torch.no_grad():
        assert (model(**inputs).logits[0, frame0] - before[frame0]).abs().max() > 1e-4


def test_video_vision_remember_inputs_place_every_token_in_its_own_frame():
    processor, model = video_processor_and_model("clip", projector_type="mlp", vision_remember_window_size=2)
    inputs = processor(text="<video>", videos=[random_video(3)], return_tensors="pt")
    features = model.model.get_video_features(inputs["pixel_values_videos"]).vision_remember_features
    assert features.features[0].shape[:2] == (3, model.config.patch_grid_size**2)
    mask = inputs["input_ids"] == model.config.video_token_id
    vr_inputs = video_vision_remember_inputs(mask, features, model.config)
    per_frame = model.config.num_video_tokens_per_frame  # 2 x 2 pooled tokens over a 4 x 4 feature grid
    assert vr_inputs.positions.numel() == 3 * per_frame  # the newline is not rewritten
    assert vr_inputs.token_tile.tolist() == [f for f in range(3) for _ in range(per_frame)]
    assert vr_inputs.num_images == 3 and vr_inputs.image_index.tolist() == vr_inputs.token_tile.tolist()
    cells = model.config.patch_grid_size**2
    window_frame = vr_inputs.window_index // cells
    assert torch.equal(window_frame, vr_inputs.token_tile[:, None].expand_as(window_frame))
    # window = 2 * stride = 4 feature cells: each of the 4 pooled tokens reads the whole 4 x 4 frame (partition)
    assert vr_inputs.window_valid.all() and vr_inputs.window_index.shape[1] == cells


def test_videos_of_different_lengths_encode_flat_as_each_alone():
    """`(total_frames, 3, H, W)` with `video_num_frames` (how vLLM batches videos of different lengths) gives each
    video's tokens and VR features as its own `(1, frames, 3, H, W)` encoding."""
    _, model = video_processor_and_model(projector_type="mlp")
    videos = [torch.randn(n, 3, SIGLIP_TILE, SIGLIP_TILE, generator=torch.Generator().manual_seed(n)) for n in (3, 1)]
    flat = model.model.get_video_features(torch.cat(videos), video_num_frames=[3, 1])
    for index, video in enumerate(videos):
        alone = model.model.get_video_features(video[None])
        torch.testing.assert_close(flat.pooler_output[index], alone.pooler_output[0], rtol=1e-5, atol=1e-6)
        for got, expected in zip(flat.vision_remember_features, alone.vision_remember_features, strict=True):
            torch.testing.assert_close(got[index], expected[0], rtol=1e-5, atol=1e-6)
    assert [len(tokens) for tokens in flat.pooler_output] == [3 * 4 + 1, 1 * 4 + 1]
    with pytest.raises(ValueError, match="do not add up"):
        model.model.get_video_features(torch.cat(videos), video_num_frames=[2, 1])


def test_vision_remember_video_off_leaves_video_tokens_as_projected():
    processor, model = video_processor_and_model(vision_remember_video=False)
    inputs = processor(text="<video> what?", videos=[random_video(2)], return_tensors="pt")
    without_vr = tiny_model(tiny_config(**{**model.config.to_dict(), "vision_remember_layers": []}))
    without_vr.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, without_vr(**inputs).logits, rtol=1e-6, atol=1e-6)
    assert model.model.get_video_features(inputs["pixel_values_videos"]).vision_remember_features is None


# ---------------------------------------------------------------------------------------------------------------------
# Mixed prompts, generation with the cache, batches with left padding
# ---------------------------------------------------------------------------------------------------------------------
def mixed_conversations():
    video_a, video_b = random_video(2, seed=1), random_video(2, seed=2)
    return [
        [  # an image and a video, then a text-only turn
            {"role": "user", "content": [{"type": "image", "image": random_picture(3)}, {"type": "text", "text": "A"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "The total is 42."}]},
            {"role": "user", "content": [{"type": "video", "video": video_a}, {"type": "text", "text": "Same?"}]},
        ],
        [  # two videos
            {
                "role": "user",
                "content": [
                    {"type": "video", "video": video_b},
                    {"type": "video", "video": [Image.fromarray(f) for f in video_a]},
                    {"type": "text", "text": "Compare the two."},
                ],
            }
        ],
        [{"role": "user", "content": [{"type": "text", "text": "Just text, please."}]}],
    ]


def test_mixed_batch_with_left_padding_generates_each_prompt_as_alone():
    processor, model = video_processor_and_model()
    processor.tokenizer.padding_side = "left"
    conversations = mixed_conversations()
    batch = chat(processor, conversations)
    assert batch["pixel_values_videos"].shape[:2] == (3, 2) and batch["pixel_values"].shape[0] == 1
    batched = model.generate(**batch, max_new_tokens=3, do_sample=False)[:, batch["input_ids"].shape[1] :]
    for row, conversation in enumerate(conversations):
        alone = chat(processor, [conversation])
        tokens = model.generate(**alone, max_new_tokens=3, do_sample=False)[0, alone["input_ids"].shape[1] :]
        assert batched[row].tolist() == tokens.tolist(), row


def test_generate_with_the_cache_equals_generate_without_it_on_video():
    processor, model = video_processor_and_model()
    inputs = chat(processor, mixed_conversations()[:1])
    cached = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    uncached = model.generate(**inputs, max_new_tokens=3, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    with torch.no_grad():  # the prefill's last logits are the forward's
        last = model(**inputs).logits[0, -1]
    assert int(last.argmax()) == int(cached[0, inputs["input_ids"].shape[1]])


def test_image_text_to_text_pipeline_answers_about_videos_as_generate_does():
    from transformers import pipeline

    processor, model = video_processor_and_model()
    conversation = mixed_conversations()[1]  # two videos
    inputs = chat(processor, [conversation])
    tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    pipe = pipeline("image-text-to-text", model=model, processor=processor)
    answer = pipe(text=conversation, max_new_tokens=3, do_sample=False, return_full_text=False)
    assert answer[0]["generated_text"] == processor.decode(tokens, skip_special_tokens=True)


def test_beam_search_expands_the_video_features_per_prompt():
    """generate() expands the encoded videos (and VR's features) for the beams: a batch of two video prompts gives
    each prompt's own beam-search result."""
    processor, model = video_processor_and_model()
    processor.tokenizer.padding_side = "left"
    conversations = mixed_conversations()[:2]
    beams = dict(max_new_tokens=3, do_sample=False, num_beams=2, num_return_sequences=2)
    batch = chat(processor, conversations)
    batched = model.generate(**batch, **beams)[:, batch["input_ids"].shape[1] :]
    for row, conversation in enumerate(conversations):
        alone = chat(processor, [conversation])
        expected = model.generate(**alone, **beams)[:, alone["input_ids"].shape[1] :]
        assert batched[2 * row : 2 * row + 2, : expected.shape[1]].tolist() == expected.tolist(), row


# ---------------------------------------------------------------------------------------------------------------------
# Conversion carries OneVision's video settings
# ---------------------------------------------------------------------------------------------------------------------
def test_converted_onevision_keeps_its_video_token_and_pooling_and_matches_on_video(tmp_path):
    from llava_vr import conversion

    tokenizer = video_tokenizer()
    torch.manual_seed(4)
    source = LlavaOnevisionForConditionalGeneration(
        LlavaOnevisionConfig(
            vision_config=tiny_vision_config("siglip", SIGLIP_TILE),
            text_config=tiny_text_config(vocab_size=len(tokenizer)),
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
            image_grid_pinpoints=[[SIGLIP_TILE, SIGLIP_TILE], [SIGLIP_TILE, 2 * SIGLIP_TILE]],
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
        )
    ).eval()
    folder = tmp_path / "source"
    source.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    anyres_image_processor(
        "onevision", SIGLIP_TILE, source.config.image_grid_pinpoints, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(folder)
    output = tmp_path / "converted"
    flags = ["--projector-type", "mlp", "--vision-remember-layers", "1", "4"]
    assert (
        conversion.main(
            [
                "--source",
                str(folder),
                "--output",
                str(output),
                *flags,
                "--vision-remember-feature-layers",
                "1",
                "2",
                "3",
            ]
        )
        == 0
    )
    model = LlavaVRForConditionalGeneration.from_pretrained(output).eval()
    processor = LlavaVRProcessor.from_pretrained(output)
    assert model.config.video_token_id == source.config.video_token_id == processor.video_token_id
    assert model.config.spatial_pool_stride == processor.spatial_pool_stride == 2
    inputs = processor(text=["<video> what?"], videos=[random_video(2)], return_tensors="pt")
    with torch.no_grad():
        expected = source(**inputs).logits
        torch.testing.assert_close(model(**inputs).logits, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: a ValueError naming the problem
# ---------------------------------------------------------------------------------------------------------------------
def test_bad_videos_raise_value_errors_naming_the_problem(tmp_path):
    processor, model = video_processor_and_model(perturb_vr=False)
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    broken_gif = tmp_path / "broken.gif"
    broken_gif.write_bytes(b"GIF89a\x10\x00\x10\x00" + b"\x00" * 5)
    odd_frames = [Image.new("RGB", (8, 8)), Image.new("RGB", (9, 8))]
    cases = [
        (dict(text="<video>", videos=[np.zeros((0, 8, 8, 3), np.uint8)]), "has no frames"),
        (dict(text="<video>", videos=[odd_frames]), "frames of different sizes"),
        (dict(text="<video>", videos=[str(corrupt)]), "cannot read the video|needs PyAV"),
        (dict(text="<video>", videos=[str(broken_gif)]), "cannot read the video"),
        (dict(text="<video>", videos=[str(tmp_path / "missing.mp4")]), "no such video file"),
        (dict(text="<video> what?"), "0 videos were given"),
        (dict(text="no placeholder", videos=[random_video(2)]), "each video needs exactly one placeholder"),
        (dict(text="<video><video>", videos=[random_video(2), random_video(3)]), "different frame counts"),
        (dict(text="<video>", videos=[random_video(2)], num_frames=5), "cannot sample 5 frames"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            processor(**kwargs)
    processor.tokenizer.model_max_length = 20
    with pytest.raises(ValueError, match="more than the tokenizer's model_max_length 20"):
        processor(text="<video>", videos=[random_video(30)])  # 30 x 1 + 1 tokens


def test_model_refuses_video_tokens_without_videos_and_mismatched_counts():
    processor, model = video_processor_and_model(perturb_vr=False)
    inputs = processor(text="<video>", videos=[random_video(2)], return_tensors="pt")
    with pytest.raises(ValueError, match="video tokens but no pixel_values_videos"):
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    with pytest.raises(ValueError, match="Video features and video tokens do not match"):
        model(**inputs | {"pixel_values_videos": inputs["pixel_values_videos"].repeat(1, 2, 1, 1, 1)})
    with pytest.raises(ValueError, match="the tower expects"):
        model(**inputs | {"pixel_values_videos": inputs["pixel_values_videos"][..., :20, :20]})


def test_tokenizer_without_video_token_keeps_the_processor_image_only():
    tokenizer = build_tiny_tokenizer()
    config = tiny_config()
    processor = LlavaVRProcessor.from_model_config(
        config, anyres_image_processor("next", 56, config.image_grid_pinpoints), tokenizer
    )
    assert processor.video_token is None and processor.video_token_id is None
    assert processor(text="a literal <video> in text")["input_ids"]  # plain text, no placeholder
    with pytest.raises(ValueError, match="image-only"):
        processor(text="hi", videos=[random_video(2)])
