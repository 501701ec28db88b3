# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""vLLM multimodal processing for LLaVA-VR: pixels from the checkpoint's own `LlavaVRProcessor`, placeholder counts
from the package's `anyres_layout` (images) and `video_num_tokens` (videos).

An image is processed the way Transformers processes it *in its prompt*: tiled with AnyRes when it is alone (or the
model tiles every image, `multi_image_anyres`), base tile only when it shares the prompt with other images
(LLaVA-OneVision; its image processor then pads the image to a square instead of tiling it). vLLM caches processed
images and encoder outputs per image hash, independently of the prompt, so the hash of a base-tile-only image is
salted: the same picture alone and in a multi-image prompt are two cache entries, never confused.

Fields handed to the model per image: `pixel_values` (its tiles, base first; flat over the batch), `image_sizes`
(`(height, width)`) and `image_num_tiles` (1 = base tile only). Per video (LLaVA-OneVision's layout, when the
checkpoint's processor and config have a video token): `pixel_values_videos` (its frames, each at the base tile;
flat over the batch) and `video_num_frames`. A video is processed alone, as Transformers processes each video, so its
cache entry does not depend on its prompt; images are counted without the videos (Transformers tiles a lone image
beside a video).
"""

from collections.abc import Mapping, Sequence

import torch
from transformers import BatchFeature
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import (
    ImageProcessorItems,
    ImageSize,
    MultiModalDataItems,
    MultiModalDataParser,
    VideoProcessorItems,
)
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
)

from .token_counts import (
    image_layout,
    image_size_with_most_tokens,
    is_tiled,
    max_image_tokens,
    max_video_frames,
    supports_video,
    video_tokens,
)

# Processor option carrying the number of images of the prompt into the processing of its cache-missing images.
PROMPT_IMAGES_KWARG = "llava_vr_prompt_images"
_BASE_TILE_SALT = "+llava_vr_base_tile_only"


class LlavaVRDataParser(MultiModalDataParser):
    """vLLM's parser, with a video given as a list of frames of different sizes refused by name (vLLM's own
    `np.array(frames)` fails with numpy's 'inhomogeneous shape')."""

    def _get_video_with_metadata(self, video):
        if isinstance(video, list) and video:
            sizes = [_frame_size(frame) for frame in video]
            odd = next((i for i, size in enumerate(sizes) if size != sizes[0]), None)
            if odd is not None:
                raise ValueError(
                    f"a video has frames of different sizes: frame 0 is {sizes[0][0]}x{sizes[0][1]}, frame {odd} is "
                    f"{sizes[odd][0]}x{sizes[odd][1]} (height x width); every frame of a video must have one size"
                )
        return super()._get_video_with_metadata(video)


def _frame_size(frame) -> tuple:
    """`(height, width)` of a PIL image or an `(H, W[, C])` array."""
    if hasattr(frame, "size") and not hasattr(frame, "shape"):
        return frame.size[1], frame.size[0]
    return tuple(frame.shape[:2])


class LlavaVRProcessingInfo(BaseProcessingInfo):
    def get_data_parser(self) -> MultiModalDataParser:
        return LlavaVRDataParser(
            expected_hidden_size=self._get_expected_hidden_size(),
            allow_missing_mm_embeddings=self.allow_missing_mm_embeddings,
        )

    def get_hf_config(self):
        return self.ctx.get_hf_config()  # the checkpoint's own (remote-code) LlavaVRConfig class

    def get_hf_processor(self, **kwargs):
        processor = self.ctx.get_hf_processor(**kwargs)
        if not hasattr(processor, "image_layouts") or getattr(processor, "image_processor", None) is None:
            raise ValueError(
                f"the checkpoint's processor is a {type(processor).__name__}; LLaVA-VR serving needs its "
                "LlavaVRProcessor (processor_config.json with an AnyRes image processor)"
            )
        _check_processor_matches_config(processor, self.get_hf_config())
        return processor

    def video_supported(self) -> bool:
        """The checkpoint takes videos: its config has a video token in the vocabulary and its processor the same."""
        config = self.get_hf_config()
        processor = self.get_hf_processor()
        return supports_video(config) and getattr(processor, "video_token_id", None) == config.video_token_id

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None, "video": None} if self.video_supported() else {"image": None}

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        config = self.get_hf_config()
        most = {"image": max_image_tokens(config)}
        if self.video_supported():
            most["video"] = video_tokens(config, max_video_frames(config, seq_len))
        return most

    def get_image_size_with_most_features(self) -> ImageSize:
        height, width = image_size_with_most_tokens(self.get_hf_config())
        return ImageSize(width=width, height=height)

    def image_tiled(self, num_prompt_images: int) -> bool:
        return is_tiled(self.get_hf_config(), num_prompt_images)


def _check_processor_matches_config(processor, config) -> None:
    """The vLLM model counts and packs image tokens from the model config, the pixels come from the processor:
    refuses a checkpoint whose processor tiles or counts differently (Transformers would fail on it per request)."""
    pairs = {
        "image_grid_pinpoints": (
            [list(p) for p in processor.image_processor.image_grid_pinpoints],
            [list(p) for p in config.image_grid_pinpoints],
        ),
        "tile size": (processor.tile_size, config.vision_config.image_size),
        "tokens per tile": (processor.num_image_tokens, config.num_image_tokens_per_tile),
        "vision_aspect_ratio": (processor.vision_aspect_ratio, config.vision_aspect_ratio),
        "multi_image_anyres": (processor.multi_image_anyres, config.multi_image_anyres),
    }
    if getattr(processor, "video_token_id", None) is not None and supports_video(config):
        pairs["video token id"] = (processor.video_token_id, config.video_token_id)
        pairs["spatial_pool_stride"] = (processor.spatial_pool_stride, config.spatial_pool_stride)
    for name, (in_processor, in_config) in pairs.items():
        if in_processor != in_config:
            raise ValueError(f"the checkpoint's processor has {name} {in_processor!r}, its config {in_config!r}")


class LlavaVRDummyInputsBuilder(BaseDummyInputsBuilder[LlavaVRProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        processor = self.info.get_hf_processor()
        videos = processor.video_token * mm_counts.get("video", 0) if mm_counts.get("video") else ""
        return processor.image_token * mm_counts.get("image", 0) + videos

    def get_dummy_mm_data(self, seq_len, mm_counts, mm_options):
        size = self.info.get_image_size_with_most_features()
        options = mm_options or {}
        images = self._get_dummy_images(
            width=size.width, height=size.height, num_images=mm_counts.get("image", 0), overrides=options.get("image")
        )
        data = {"image": images}
        if mm_counts.get("video", 0):
            config = self.info.get_hf_config()
            tile = config.vision_config.image_size  # every frame is resized to the base tile
            data["video"] = self._get_dummy_videos(
                width=tile,
                height=tile,
                num_frames=max_video_frames(config, seq_len),
                num_videos=mm_counts["video"],
                overrides=options.get("video"),
            )
        return data


class LlavaVRMultiModalProcessor(BaseMultiModalProcessor[LlavaVRProcessingInfo]):
    def _get_hf_mm_text(self, mm_counts: Mapping[str, int]) -> str:
        return self.dummy_inputs.get_dummy_text(mm_counts)

    def apply(self, inputs, timing_ctx):
        """vLLM's processing, then: every image (video) token of the prompt belongs to an image (a video): a stray
        `<image>` / `<video>` typed in the text would otherwise be read as a token without its item, or take an
        item's place."""
        result = super().apply(inputs, timing_ctx)
        config = self.info.get_hf_config()
        token_ids = torch.tensor(result["prompt_token_ids"])
        for modality, token_id in (("image", config.image_token_id), ("video", config.video_token_id)):
            placed = sum(p.length for p in result["mm_placeholders"].get(modality, []))
            found = int((token_ids == token_id).sum())
            if found != placed and (modality == "image" or supports_video(config)):
                self._refuse_stray_tokens(inputs, result, modality, found - placed)
        return result

    @staticmethod
    def _refuse_stray_tokens(inputs, result, modality: str, extra: int):
        # vLLM's processing has recorded this request's items in the front end's shadow of the engine's cache, but a
        # refused request never reaches the engine: drop them (vLLM's drift recovery), or the next request with the
        # same item would be sent without its data and fail with a 500
        if inputs.cache is not None:
            for mm_hash in (h for hashes in result["mm_hashes"].values() for h in hashes):
                inputs.cache.invalidate(mm_hash)
        items = inputs.mm_data_items.get_count(modality, strict=False)
        raise ValueError(
            f"the prompt holds {extra} {modality} token(s) beyond the {items} {modality}(s) given: each {modality} "
            f"needs exactly one placeholder, and the text must not contain the {modality} token itself"
        )

    def _get_mm_hashes(self, inputs):
        hashes = super()._get_mm_hashes(inputs)
        num_images = inputs.mm_data_items.get_count("image", strict=False)
        if "image" in hashes and num_images > 1 and not self.info.image_tiled(num_images):
            hashes = {**hashes, "image": [h + _BASE_TILE_SALT for h in hashes["image"]]}
        return hashes

    def _get_cache_missing_processor_kwargs(self, inputs, mm_is_cached):
        kwargs = super()._get_cache_missing_processor_kwargs(inputs, mm_is_cached)
        return {**kwargs, PROMPT_IMAGES_KWARG: inputs.mm_data_items.get_count("image", strict=False)}

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        """Runs the checkpoint's `LlavaVRProcessor` on the images as Transformers would for their prompt (each
        image's tiles, only those its layout reads, size and tile count) and on each video alone (its frames)."""
        kwargs = {k: v for k, v in hf_kwargs.items() if k != PROMPT_IMAGES_KWARG}
        outputs = {}
        if hf_data.get("images"):
            outputs.update(self._process_images(list(hf_data["images"]), kwargs, hf_kwargs))
        if hf_data.get("videos"):
            outputs.update(self._process_videos(list(hf_data["videos"]), kwargs))
        return BatchFeature(outputs)

    def _process_videos(self, videos: list, kwargs: Mapping[str, object]) -> dict:
        """Each video alone through the processor (its sampling, resizing and normalisation): its frames, flat."""
        processor = self.info.get_hf_processor(**kwargs)
        frames = []
        for index, video in enumerate(videos):  # one call per video: a call stacks its videos (equal lengths only)
            data = dict(text=processor.video_token, videos=[video])
            try:
                processed = self.info.ctx.call_hf_processor(processor, data, kwargs)
            except ValueError as error:  # vLLM's message repeats every frame's pixels; the processor's names the fault
                if isinstance(error.__cause__, ValueError):
                    raise ValueError(f"video {index}: {error.__cause__}") from error.__cause__
                raise
            frames.append(processed["pixel_values_videos"][0])
        return {
            "pixel_values_videos": torch.cat(frames),
            "video_num_frames": torch.tensor([f.shape[0] for f in frames]),
        }

    def _process_images(self, images: list, kwargs: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> dict:
        """The images as Transformers processes them in their prompt: tiles (flat), sizes and tile counts."""
        num_prompt_images = int(hf_kwargs.get(PROMPT_IMAGES_KWARG, len(images)))
        tiled = self.info.image_tiled(num_prompt_images)
        processor = self.info.get_hf_processor(**kwargs)
        token = processor.image_token
        if tiled:
            data = dict(text=[token] * len(images), images=[[image] for image in images])
        else:  # one prompt of several images; a lone cache-missing one is processed beside a copy of itself
            group = images if len(images) > 1 else images * 2
            data = dict(text=[token * len(group)], images=[group])
        processed = self.info.ctx.call_hf_processor(processor, data, {**kwargs, "padding": True})
        config = self.info.get_hf_config()
        sizes = processed["image_sizes"][: len(images)]
        layouts = [image_layout(config, size.tolist(), tiled) for size in sizes]
        pixel_values = processed["pixel_values"][: len(images)]
        if pixel_values.dim() != 5 or any(layout.num_tiles > pixel_values.shape[1] for layout in layouts):
            raise ValueError(
                f"the processor gave pixel_values of shape {tuple(pixel_values.shape)} for image layouts of "
                f"{[layout.num_tiles for layout in layouts]} tiles: its image_grid_pinpoints or tile size differ from "
                "the model config's"
            )
        return {
            "pixel_values": torch.cat([pv[: lay.num_tiles] for pv, lay in zip(pixel_values, layouts, strict=True)]),
            "image_sizes": sizes.long(),
            "image_num_tiles": torch.tensor([layout.num_tiles for layout in layouts]),
        }

    def _get_mm_fields_config(self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]):
        num_tiles = hf_inputs.get("image_num_tiles", torch.empty(0, dtype=torch.long))
        num_frames = hf_inputs.get("video_num_frames", torch.empty(0, dtype=torch.long))
        return dict(
            pixel_values=MultiModalFieldConfig.flat_from_sizes("image", num_tiles),
            image_sizes=MultiModalFieldConfig.batched("image", keep_on_cpu=True),
            image_num_tiles=MultiModalFieldConfig.batched("image", keep_on_cpu=True),
            pixel_values_videos=MultiModalFieldConfig.flat_from_sizes("video", num_frames),
            video_num_frames=MultiModalFieldConfig.batched("video", keep_on_cpu=True),
        )

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        config = self.info.get_hf_config()
        image_token_id = config.image_token_id
        if "image" in mm_items:
            mm_items.get_items("image", ImageProcessorItems)  # precomputed image embeddings carry no VR inputs

        def replacement(item_idx: int) -> list[int]:
            item = out_mm_kwargs["image"][item_idx]
            size = item["image_sizes"].data.tolist()
            tiled = int(item["image_num_tiles"].data) > 1
            return [image_token_id] * image_layout(config, size, tiled).num_tokens

        updates = [PromptReplacement(modality="image", target=[image_token_id], replacement=replacement)]
        if "video" not in mm_items:
            return updates
        mm_items.get_items("video", VideoProcessorItems)  # precomputed video embeddings carry no VR inputs
        video_token_id = config.video_token_id

        def video_replacement(item_idx: int) -> list[int]:
            num_frames = int(out_mm_kwargs["video"][item_idx]["video_num_frames"].data)
            return [video_token_id] * video_tokens(config, num_frames)

        return [*updates, PromptReplacement(modality="video", target=[video_token_id], replacement=video_replacement)]


__all__ = ["LlavaVRDummyInputsBuilder", "LlavaVRMultiModalProcessor", "LlavaVRProcessingInfo", "PROMPT_IMAGES_KWARG"]
