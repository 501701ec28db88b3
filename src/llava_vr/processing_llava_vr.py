# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""
Processor class for LLaVA-VR: Transformers' own AnyRes image processors (LLaVA-NeXT's or LLaVA-OneVision's), the
torchvision-free video frames of `video_processing_llava_vr.py`, and a Qwen2 tokenizer. Every `<image>` / `<video>`
placeholder is expanded to exactly the number of vision tokens the model scatters, counted with the model's own
`anyres_layout` / `video_num_tokens` (one source of truth, see `packing_llava_vr.py`).
"""

import math
import re
from typing import Unpack

import numpy as np
from transformers.audio_utils import AudioInput
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import ImageInput
from transformers.processing_utils import MultiModalData, ProcessingKwargs, ProcessorMixin
from transformers.tokenization_utils_base import PreTokenizedInput, TextInput
from transformers.video_utils import VideoInput

from .packing_llava_vr import (
    VIDEO_POOL_STRIDES,
    AnyResLayout,
    anyres_layout,
    images_use_anyres,
    max_tiles_from_aspect_ratio,
    video_num_tokens,
)
from .video_processing_llava_vr import LlavaVRVideoProcessor, flat_videos

# `apply_chat_template(..., sanitize_control_tokens=True)` (Transformers >= 5.23) wraps every control token it finds
# in user text between these two private-use characters before rendering, so that such a token is encoded as text: a
# marked `<image>` is user text, not an image placeholder. Transformers keeps the markers private
# (`utils/chat_template_utils.py`); `test_processing_llava_vr.py` checks these against its marking.
CONTROL_TOKEN_MARKERS = ("\U000f0000", "\U000f0001")
MARKED_CONTROL_TOKEN = re.compile(f"{CONTROL_TOKEN_MARKERS[0]}.*?{CONTROL_TOKEN_MARKERS[1]}")


# Qwen2 chat format. A message's content is a string or a list of `{"type": "text", "text": ...}`,
# `{"type": "image", ...}` and `{"type": "video", ...}` items; an image renders as `<image>` + newline, a video as
# `<video>` + newline (LLaVA-OneVision's layout). Each assistant
# reply, with its `<|im_end|>`, sits in a `{% generation %}` block, so `return_assistant_tokens_mask=True` (and TRL's
# `assistant_only_loss=True`) covers exactly the replies. No default system message.
DEFAULT_CHAT_TEMPLATE = (
    "{%- macro render_content(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}"
    "{%- for item in content -%}"
    "{%- if item['type'] == 'image' -%}{{ '<image>\n' }}"
    "{%- elif item['type'] == 'video' -%}{{ '<video>\n' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{ render_content(message['content']) + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{%- else -%}"
    "{{ render_content(message['content']) + '<|im_end|>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

# PIL modes that Transformers' image processors turn into saturated or broken RGB (values above 255, or no
# conversion to RGB): rescaled / converted here first. Other modes (L, LA, P, RGBA, CMYK, 1, ...) are left to the
# image processor's own `convert_to_rgb`, so pixels stay identical to Transformers' LLaVA processors.
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Pixels of any integer or float type -> uint8. 16-bit unsigned data is scaled by 255/65535; floats in [0, 1] by
    255; other data by 255 over the smallest of 255, 65535 or its maximum that covers its range."""
    if pixels.dtype == np.uint8:
        return pixels
    values = pixels.astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if pixels.dtype.kind == "u" and pixels.dtype.itemsize == 2:
        peak = 65535.0
    elif pixels.dtype.kind == "f" and low >= 0.0 and high <= 1.0:
        peak = 1.0
    else:
        peak = next(p for p in (255.0, 65535.0, max(high, 1.0)) if high <= p)
    return np.clip(np.rint(values * (255.0 / peak)), 0, 255).astype(np.uint8)


def convert_image_for_processing(image):
    """Makes an image of any PIL mode or array layout acceptable to Transformers' image processors.

    - PIL 16/32-bit integer and float modes (`I;16`, `I`, `F`): rescaled to 8 bits (see `_to_uint8`), then RGB; PIL's
      own conversion would clip them to white.
    - PIL `La` (premultiplied alpha, which PIL cannot convert to RGB): converted to `LA`.
    - `(height, width)` greyscale arrays / tensors: repeated to three channels; integer arrays with values above 255
      are rescaled to uint8.
    Anything else (L, LA, P, RGBA, CMYK, 1, ... and ordinary arrays) is returned unchanged: the image processor's own
    `convert_to_rgb` handles it exactly as in Transformers' LLaVA processors.
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.mode in _HIGH_BIT_MODES:
            return Image.fromarray(_to_uint8(np.asarray(image))).convert("RGB")  # uint8 (H, W) -> L
        if image.mode == "La":
            return image.convert("LA")
        return image
    if hasattr(image, "ndim") and hasattr(image, "dtype"):
        pixels = image if isinstance(image, np.ndarray) else image.numpy(force=True)
        changed = False
        if pixels.ndim == 2:
            pixels, changed = np.repeat(pixels[..., None], 3, axis=-1), True
        if pixels.dtype.kind in "iu" and pixels.dtype != np.uint8 and pixels.max(initial=0) > 255:
            pixels, changed = _to_uint8(pixels), True
        return pixels if changed else image
    return image


def _is_array_batch(images) -> bool:
    return hasattr(images, "ndim") and not isinstance(images, (list, tuple)) and images.ndim == 4


def _flat_images(images) -> list:
    """Any nesting of images (lists, tuples, 4D arrays) -> flat list of single images."""
    if isinstance(images, (list, tuple)):
        return [image for item in images for image in _flat_images(item)]
    if _is_array_batch(images):
        return list(images)
    return [images]


def _is_nested(images) -> bool:
    return isinstance(images, (list, tuple)) and len(images) > 0 and all(isinstance(g, (list, tuple)) for g in images)


def _side(size) -> int | None:
    """Height of a `size` / `crop_size` given as a dict or a `SizeDict` (`height`, else `shortest_edge`)."""
    if size is None:
        return None
    get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    return get("height") or get("shortest_edge")


class LlavaVRProcessor(ProcessorMixin):
    r"""
    Constructs a LLaVA-VR processor: a Transformers AnyRes image processor, video frames (`video_processor`, a
    [`LlavaVRVideoProcessor`] built from the image processor's settings) and a Qwen2 tokenizer in one processor.

    [`LlavaVRProcessor`] tiles images exactly as LLaVA-NeXT / LLaVA-OneVision do (Transformers'
    `LlavaNextImageProcessor(Pil)` or `LlavaOnevisionImageProcessor(Pil)`; no torchvision needed) and expands each
    `<image>` in the text into `anyres_layout(...).num_tokens` image tokens, the count the model's packing produces:
    `g*g` base-tile tokens, plus, for a tiled image, its unpadded crop tokens (down-interpolated for `anyres_max_N`)
    with one newline per row; `g*g + 1` for an image encoded by its base tile only. `g = isqrt(num_image_tokens)`.
    Each `<video>` becomes `frames * ceil(g / spatial_pool_stride)**2 + 1` video tokens (LLaVA-OneVision's layout:
    every frame at the base tile resolution, pooled, one newline per video).

    Args:
        image_processor ([`LlavaNextImageProcessorPil`] or [`LlavaOnevisionImageProcessorPil`], *optional*):
            The AnyRes image processor. Keep the source checkpoint's: LLaVA-NeXT's (resize + center crop) for a model
            converted from LLaVA-NeXT, LLaVA-OneVision's (pad to square for untiled images) for one from OneVision.
            Its `image_grid_pinpoints` and tile (`crop_size`, else `size`) must match the model config's
            `image_grid_pinpoints` and `vision_config.image_size`.
        tokenizer ([`Qwen2Tokenizer`], *optional*):
            The tokenizer; it must know `image_token` as one token.
        num_image_tokens (`int`):
            Image tokens per tile after the projector (`config.num_image_tokens_per_tile`): 576 for `mlp` on CLIP-336,
            144 for the compressing projectors; 729 / 196 / 169 for SigLIP-384 variants. A perfect square. It may be
            set after loading (`processor.num_image_tokens = 144`), as on Transformers' LLaVA-OneVision processor: the
            token grid is derived from it at every call, and a value that is not a perfect square raises `ValueError`.
        vision_aspect_ratio (`str`, *optional*, defaults to `"anyres_max_9"`):
            `config.vision_aspect_ratio`: `"anyres_max_N"` (OneVision's down-interpolation of large images),
            `"anyres"` (LLaVA-NeXT, no cap) or `"pad"` (base tile only).
        multi_image_anyres (`bool`, *optional*, defaults to `False`):
            `config.multi_image_anyres`. `False` (LLaVA-OneVision): an image that shares its prompt with other images
            is encoded by its base tile only. `True` (LLaVA-NeXT): every image is tiled.
        image_token (`str`, *optional*, defaults to `"<image>"`):
            The placeholder (the tokenizer's `image_token` wins when it defines one).
        video_token (`str`, *optional*, defaults to `"<video>"`):
            The video placeholder (the tokenizer's `video_token` wins when it defines one). A tokenizer without it
            leaves the processor image-only (`video_token_id` is `None` and `videos=` raises `ValueError`).
        spatial_pool_stride (`int`, *optional*, defaults to 2):
            `config.spatial_pool_stride`: each frame's token grid is pooled to `ceil(g / stride)` per side.
        num_frames (`int`, *optional*):
            Frames sampled uniformly from every video by default (`None`: all frames; a call's `num_frames` / `fps`
            wins).
        chat_template (`str`, *optional*):
            Jinja chat template; defaults to [`DEFAULT_CHAT_TEMPLATE`] (Qwen2 format with generation markers).
    """

    _auto_class = "AutoProcessor"

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        num_image_tokens=None,
        vision_aspect_ratio="anyres_max_9",
        multi_image_anyres=False,
        image_token="<image>",
        video_token="<video>",
        spatial_pool_stride=2,
        num_frames=None,
        chat_template=None,
        **kwargs,
    ):
        self.num_image_tokens = num_image_tokens  # validated by the property's setter
        if vision_aspect_ratio != "pad":
            max_tiles_from_aspect_ratio(vision_aspect_ratio)  # raises ValueError on anything else
        if tokenizer is None:
            raise ValueError("LlavaVRProcessor needs a tokenizer")
        if image_processor is not None and getattr(image_processor, "image_grid_pinpoints", None) is None:
            raise ValueError(
                "LlavaVRProcessor needs an AnyRes image processor with image_grid_pinpoints (LlavaNextImageProcessor "
                f"or LlavaOnevisionImageProcessor), got {type(image_processor).__name__}"
            )
        self.vision_aspect_ratio = vision_aspect_ratio
        self.multi_image_anyres = bool(multi_image_anyres)
        self.image_token = getattr(tokenizer, "image_token", None) or image_token
        self.image_token_id = getattr(tokenizer, "image_token_id", None)
        if self.image_token_id is None:
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        if self.image_token_id is None or (
            self.image_token_id == tokenizer.unk_token_id and self.image_token != tokenizer.unk_token
        ):
            raise ValueError(f"the tokenizer has no {self.image_token!r} token: add it as a special token")
        if int(spatial_pool_stride) not in VIDEO_POOL_STRIDES:
            raise ValueError(f"spatial_pool_stride={spatial_pool_stride!r}: expected one of {VIDEO_POOL_STRIDES}")
        self.spatial_pool_stride = int(spatial_pool_stride)
        self.num_frames = num_frames
        self.video_token = getattr(tokenizer, "video_token", None) or video_token or "<video>"
        self.video_token_id = getattr(tokenizer, "video_token_id", None)
        if self.video_token_id is None:
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        if self.video_token_id is None or (
            self.video_token_id == tokenizer.unk_token_id and self.video_token != tokenizer.unk_token
        ):
            self.video_token = self.video_token_id = None  # image-only: `videos=` is refused
        super().__init__(image_processor, tokenizer, chat_template=chat_template or DEFAULT_CHAT_TEMPLATE)

    @classmethod
    def from_model_config(cls, config, image_processor, tokenizer, **kwargs) -> "LlavaVRProcessor":
        """The processor that counts exactly what a model of `config` (`LlavaVRConfig`) scatters: its tokens per tile
        (which follow `projector_type`), `vision_aspect_ratio` and `multi_image_anyres`."""
        return cls(
            image_processor,
            tokenizer,
            num_image_tokens=config.num_image_tokens_per_tile,
            vision_aspect_ratio=config.vision_aspect_ratio,
            multi_image_anyres=config.multi_image_anyres,
            spatial_pool_stride=config.spatial_pool_stride,
            **kwargs,
        )

    @property
    def num_image_tokens(self) -> int:
        """Image tokens per tile (a perfect square `g * g`); kept in `__dict__`, so `save_pretrained` writes it."""
        return self.__dict__["num_image_tokens"]

    @num_image_tokens.setter
    def num_image_tokens(self, value: int):
        if value is None:
            raise ValueError(
                "LlavaVRProcessor needs num_image_tokens, the image tokens per tile after the projector "
                "(config.num_image_tokens_per_tile: 576 for `mlp` on CLIP-336, 144 pooled)"
            )
        grid = math.isqrt(max(int(value), 0))
        if int(value) < 1 or grid * grid != int(value):
            raise ValueError(f"num_image_tokens={value} is not the size of a square token grid (g * g)")
        self.__dict__["num_image_tokens"] = int(value)

    @property
    def video_processor(self) -> LlavaVRVideoProcessor:
        """Loads, samples and preprocesses videos with this processor's image settings (tile, mean/std, rescale)."""
        return LlavaVRVideoProcessor.from_image_processor(self.image_processor, self.tile_size, self.num_frames)

    def video_num_tokens(self, num_frames: int) -> int:
        """Video tokens of one video of `num_frames` frames: `frames * ceil(g / spatial_pool_stride)**2 + 1`."""
        return video_num_tokens(num_frames, self.token_grid, self.spatial_pool_stride)

    @property
    def token_grid(self) -> int:
        """Side `g` of a tile's token grid, derived from `num_image_tokens` (so a later change of it takes effect)."""
        return math.isqrt(self.num_image_tokens)

    def __call__(
        self,
        images: ImageInput | None = None,
        text: TextInput | PreTokenizedInput | list[TextInput] | list[PreTokenizedInput] | None = None,
        videos: VideoInput | None = None,
        audio: AudioInput | None = None,
        **kwargs: Unpack[ProcessingKwargs],
    ) -> BatchFeature:
        r"""
        Prepares images and prompts for the model.

        Args:
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor`, or a list, or a list of lists per prompt):
                The images, flat (matched to the `<image>` placeholders in order) or nested per prompt. Any PIL mode
                works (greyscale, palette, RGBA, 16-bit, ...); URLs and paths are loaded.
            text (`str` or `list[str]`):
                Prompts with one `<image>` per image and one `<video>` per video.
            videos (a video, a list of videos, or a list of lists per prompt):
                A video is a list of PIL frames, a `(frames, height, width, channels)` numpy array or tensor, a path to
                a GIF / APNG (PIL), or a path to an mp4 / webm when PyAV is installed (`llava-vr[video]`). `[]` = no
                videos. `num_frames=N` samples N frames uniformly from each video (`fps=F` where the file gives its
                frame rate); every video of one call must end with the same number of frames.
            **kwargs: tokenizer, image-processor and video arguments (`padding`, `truncation`, `max_length`,
                `return_tensors`, `images_kwargs`, `num_frames`, `fps`, ...), as for any Transformers processor.

        Returns:
            [`BatchFeature`] with:
            - `input_ids`, `attention_mask`: the tokenized prompts, each `<image>` expanded to its image tokens.
            - `pixel_values`: `(num_images, max_tiles, 3, tile, tile)`, tiles of each image (base tile first) padded
              with zeros to the batch's largest tile count.
            - `image_sizes`: `(num_images, 2)`, original `(height, width)`.
            - `batch_num_images`: `(batch_size,)` images per prompt, when known (text given or nested images).
            - `pixel_values_videos`: `(num_videos, frames, 3, tile, tile)`, when videos are given.

        Raises:
            `ValueError`: placeholders and images / videos do not match (per prompt when nested), `truncation` would
            cut through an image's tokens, a video has no frames, frames of different sizes, cannot be read, or more
            tokens than the tokenizer's `model_max_length`.
        """
        if audio is not None:
            raise ValueError("LlavaVRProcessor does not take audio")
        if videos is not None and not flat_videos(videos):
            videos = None  # `videos=[]` (lmms-eval) or empty per-prompt lists: no videos
        if videos is not None and self.video_token is None:
            raise ValueError(
                "the tokenizer has no '<video>' token, so this processor is image-only: add <video> to the tokenizer "
                "as a special token (and set the model's video_token_index to its id) to pass videos"
            )
        return super().__call__(images=images, text=text, videos=videos, **kwargs)

    # ---- hooks of `ProcessorMixin.__call__` ------------------------------------------------------------------------
    def prepare_inputs_layout(self, images=None, text=None, videos=None, audio=None, **kwargs):
        """Loads URLs/paths, converts odd image modes, and groups flat images per prompt by their placeholders."""
        images, text, videos, audio = super().prepare_inputs_layout(
            images=images, text=text, videos=videos, audio=audio, **kwargs
        )
        if videos is not None:
            videos = flat_videos(videos)  # matched to the `<video>` placeholders in order
        if images is None:
            return images, text, videos, audio
        if _is_nested(images):
            groups = [[convert_image_for_processing(image) for image in _flat_images(group)] for group in images]
            return groups, text, videos, audio
        flat = [convert_image_for_processing(image) for image in _flat_images(images)]
        counts = self._placeholder_counts(text, kwargs.get("sanitize_control_tokens", False))
        if counts is not None and sum(counts) == len(flat):
            starts = np.cumsum([0] + counts).tolist()
            return [flat[a:b] for a, b in zip(starts[:-1], starts[1:], strict=False)], text, videos, audio
        return flat, text, videos, audio  # mismatches are reported by `validate_inputs`

    def validate_inputs(self, images=None, text=None, videos=None, audio=None, **kwargs):
        """Raises `ValueError` when the `<image>` placeholders and the images disagree (both counts, per prompt), or
        the `<video>` placeholders and the videos."""
        video_counts = self._placeholder_counts(text, token=self.video_token) if self.video_token else None
        if video_counts is not None and sum(video_counts) != len(videos or []):
            raise ValueError(
                f"{sum(video_counts)} {self.video_token} placeholders in the text (per prompt: {video_counts}) but "
                f"{len(videos or [])} videos were given: each video needs exactly one placeholder"
            )
        counts = self._placeholder_counts(text)
        if counts is not None and images is not None:
            if _is_nested(images):
                per_prompt = [len(group) for group in images]
                if per_prompt != counts:
                    raise ValueError(
                        f"the number of {self.image_token} placeholders per prompt {counts} does not match the number "
                        f"of images per prompt {per_prompt}: each image needs exactly one placeholder"
                    )
            elif sum(counts) != len(images):
                raise ValueError(
                    f"{sum(counts)} {self.image_token} placeholders in the text (per prompt: {counts}) but "
                    f"{len(images)} images were given: each image needs exactly one placeholder"
                )
        elif counts is not None and any(counts):
            raise ValueError(
                f"{sum(counts)} {self.image_token} placeholders in the text (per prompt: {counts}) but no images were "
                "given"
            )
        if videos is not None and text is not None:  # counted above; Transformers' own count stacks the frames
            prompts = [text] if isinstance(text, str) else list(text)
            text, videos = [prompt.replace(self.video_token, "") for prompt in prompts], None
        super().validate_inputs(images=images, text=text, videos=videos, audio=audio, **kwargs)

    def _process_images(self, images, **kwargs):
        """Runs the image processor and builds each image's replacement string.

        `images` nested per prompt: OneVision's image processor tiles an image only when it is alone in its group, so
        it gets the groups (without empty ones) when `multi_image_anyres=False` and one image per group otherwise;
        LLaVA-NeXT's tiles every image (the model then reads only the base tile of an untiled image).
        `batch_num_images` (per prompt, zeros included) comes back with the pixels.
        """
        batch_num_images = None
        if _is_nested(images):
            batch_num_images = [len(group) for group in images]
            flat = [image for group in images for image in group]
            images = flat if self.multi_image_anyres else [group for group in images if group]
        processed = self.image_processor(images, **kwargs)
        if batch_num_images is not None:
            processed["batch_num_images"] = batch_num_images
        layouts = self.image_layouts(processed["image_sizes"], processed.get("batch_num_images"), **kwargs)
        return processed, [self.image_token * layout.num_tokens for layout in layouts]

    def _process_videos(self, videos, **kwargs):
        """Loads, samples and preprocesses the videos (`video_processor`) and builds each video's replacement
        string; refuses a video with more tokens than the tokenizer's `model_max_length`."""
        processed = self.video_processor(videos, **kwargs)
        num_frames = int(processed["pixel_values_videos"].shape[1])
        num_tokens = self.video_num_tokens(num_frames)
        limit = getattr(self.tokenizer, "model_max_length", None)
        if limit is not None and limit < 10**9 and num_tokens > limit:
            per_frame = (num_tokens - 1) // num_frames
            raise ValueError(
                f"a video of {num_frames} frames takes {num_tokens} tokens ({per_frame} per frame + 1 newline), more "
                f"than the tokenizer's model_max_length {limit}: sample fewer frames (num_frames=) or pool more "
                "(spatial_pool_stride 3 or 4)"
            )
        return processed, [self.video_token * num_tokens] * len(processed["pixel_values_videos"])

    def _check_special_mm_tokens(self, text: list[str], text_inputs, modalities: list[str]):
        """Raises `ValueError` when truncation dropped image tokens, with the `max_length` that keeps them all."""
        try:
            super()._check_special_mm_tokens(text, text_inputs, modalities)
        except ValueError as error:
            input_ids = text_inputs["input_ids"]
            input_ids = input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids
            full_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            kept = [int(np.count_nonzero(np.asarray(ids) == self.image_token_id)) for ids in input_ids]
            total = [int(np.count_nonzero(np.asarray(ids) == self.image_token_id)) for ids in full_ids]
            cut = [i for i, (k, t) in enumerate(zip(kept, total, strict=False)) if k < t]
            if not cut:
                raise
            needed = max(self._length_keeping_images(full_ids[i]) for i in cut)
            raise ValueError(
                f"truncation would cut through image tokens (prompt {cut[0]} keeps {kept[cut[0]]} of its "
                f"{total[cut[0]]} image tokens): raise max_length to at least {needed}, or disable truncation"
            ) from error

    # ---- counting ---------------------------------------------------------------------------------------------------
    @property
    def tile_size(self) -> int:
        """Side of the tiles AnyRes cuts: the image processor's `crop_size`, else its `size` (its `patch_size`)."""
        return self._tile_size()

    def _tile_size(self, **images_kwargs) -> int:
        ip = self.image_processor
        crop_size = images_kwargs.get("crop_size") or getattr(ip, "crop_size", None)
        return int(_side(crop_size) or _side(images_kwargs.get("size") or ip.size))

    def image_layouts(self, image_sizes, batch_num_images=None, **images_kwargs) -> list[AnyResLayout]:
        """The model's `AnyResLayout` of each image of `image_sizes` `(num_images, 2)` (`(height, width)` pixels);
        `batch_num_images` (images per prompt) decides which images are tiled (see `images_use_anyres`)."""
        pinpoints = images_kwargs.get("image_grid_pinpoints") or self.image_processor.image_grid_pinpoints
        tile = self._tile_size(**images_kwargs)
        use_anyres = images_use_anyres(batch_num_images, len(image_sizes), self.multi_image_anyres)
        return [
            anyres_layout(size, pinpoints, tile, self.token_grid, self.vision_aspect_ratio, tiled)
            for size, tiled in zip(image_sizes, use_anyres, strict=False)
        ]

    def _get_num_multimodal_tokens(self, image_sizes=None, batch_num_images=None, video_sizes=None, **kwargs):
        """
        Computes the number of placeholder tokens needed for images of the given sizes (what vLLM calls).

        Args:
            image_sizes (`list[list[int]]`, *optional*):
                The input sizes formatted as `(height, width)` per image.
            batch_num_images (`list[int]`, *optional*):
                Images per prompt, in order (`[len(image_sizes)]` for the images of one prompt). `None`: each image
                alone in its prompt. With `multi_image_anyres=False` an image that shares its prompt is encoded by
                its base tile only, so its count is `g*g + 1`.
            video_sizes (`list[list[int]]`, *optional*):
                `(num_frames, height, width)` per video (after frame sampling).
            **kwargs: image-processor arguments (`images_kwargs`, `image_grid_pinpoints`, `size`, ...).

        Returns:
            `MultiModalData` with `num_image_tokens` and `num_image_patches` (1 per image: pixel values are not
            flattened across tiles) per image, and `num_video_tokens` per video.
        """
        vision_data = {}
        if video_sizes is not None:
            vision_data["num_video_tokens"] = [self.video_num_tokens(int(size[0])) for size in video_sizes]
        if image_sizes is not None:
            image_sizes = list(image_sizes)
            if batch_num_images is None:
                batch_num_images = [1] * len(image_sizes)
            if sum(int(n) for n in batch_num_images) != len(image_sizes):
                raise ValueError(
                    f"batch_num_images {list(batch_num_images)} do not add up to {len(image_sizes)} images"
                )
            images_kwargs = self._merge_kwargs(
                self.valid_processor_kwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
            )["images_kwargs"]
            layouts = self.image_layouts(image_sizes, batch_num_images, **images_kwargs)
            vision_data["num_image_tokens"] = [layout.num_tokens for layout in layouts]
            vision_data["num_image_patches"] = [1] * len(image_sizes)
        return MultiModalData(**vision_data)

    def _placeholder_counts(self, text, sanitized: bool = False, token: str | None = None) -> list[int] | None:
        """Per prompt, the `token` (default the image token) placeholders, marked control tokens left out."""
        if text is None:
            return None
        prompts = [text] if isinstance(text, str) else list(text)
        if sanitized:
            prompts = [MARKED_CONTROL_TOKEN.sub("", prompt) for prompt in prompts]
        return [prompt.count(token or self.image_token) for prompt in prompts]

    def _length_keeping_images(self, ids: list[int]) -> int:
        """Smallest `max_length` at which truncation on the tokenizer's side keeps every image token of `ids`."""
        positions = np.flatnonzero(np.asarray(ids) == self.image_token_id)
        if self.tokenizer.truncation_side == "left":
            needed = len(ids) - int(positions[0])
        else:
            needed = int(positions[-1]) + 1
        return needed + self.tokenizer.num_special_tokens_to_add()

    @property
    def model_input_names(self):
        names = list(self.tokenizer.model_input_names) + list(self.image_processor.model_input_names)
        return list(dict.fromkeys(names + ["batch_num_images", "pixel_values_videos"]))


__all__ = ["DEFAULT_CHAT_TEMPLATE", "LlavaVRProcessor"]
