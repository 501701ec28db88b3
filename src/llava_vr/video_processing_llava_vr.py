# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Video frames for LLaVA-VR without torchvision: loading, uniform frame sampling and per-frame preprocessing.

Transformers' `LlavaOnevisionVideoProcessor` needs torchvision; this is the PIL / numpy / torch path with the same
result layout: every frame resized (bicubic, antialiased, as torchvision resizes a tensor) to the base tile, rounded to
8 bits, rescaled and normalised with the image processor's own `rescale_factor`, `image_mean` and `image_std`, so a
frame is preprocessed like the model's images are normalised. Output `pixel_values_videos`:
`(num_videos, frames, 3, tile, tile)`.

Accepted videos (each one of): a list of PIL frames (or `(H, W, C)` arrays), a `(T, H, W, C)` (or `(T, C, H, W)`)
numpy array or torch tensor, a path to a GIF / APNG / animated WebP (read with PIL), or a path to an mp4 / webm / any
container PyAV reads, when PyAV is installed (`pip install 'llava-vr[video]'`). Frames are sampled uniformly when
`num_frames` (or `fps`, where the container gives its frame rate) is set: Transformers' rule,
`arange(0, total, total / num_frames).int()`.
"""

import os
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F


class VideoInputError(ValueError):
    """A video this module cannot use (no frames, frames of different sizes, an unreadable file, ...)."""


PIL_VIDEO_SUFFIXES = (".gif", ".png", ".apng", ".webp")
"""Files read with PIL only (animated image formats); anything else PIL cannot identify goes to PyAV."""

# PIL resampling filter (the image processor's `resample`) -> torch interpolation mode
_RESAMPLE_MODES = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def sample_frame_indices(
    total_frames: int, num_frames: int | None = None, fps: float | None = None, video_fps: float | None = None
) -> np.ndarray:
    """Indices of the frames kept of a video of `total_frames`: all of them when neither `num_frames` nor `fps` is
    set; else `num_frames` (or `total_frames / video_fps * fps`) uniformly spaced, Transformers' rule. Raises
    `ValueError` when more frames are asked for than the video has, or `fps` without the video's frame rate."""
    if num_frames is None and fps is None:
        return np.arange(total_frames)
    if num_frames is None:
        if not video_fps:
            raise VideoInputError(
                f"fps={fps} sampling needs the video's frame rate, which this input does not carry (a list of frames "
                "or an array): pass num_frames instead"
            )
        num_frames = max(int(total_frames / video_fps * fps), 1)
    num_frames = int(num_frames)
    if num_frames < 1:
        raise VideoInputError(f"num_frames={num_frames}: a video needs at least one frame")
    if num_frames > total_frames:
        raise VideoInputError(
            f"cannot sample {num_frames} frames from a video of {total_frames} frames: lower num_frames (or fps)"
        )
    return torch.arange(0, total_frames, total_frames / num_frames).int()[:num_frames].numpy()


def _frames_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """`(T, H, W, C)` pixels of any dtype -> uint8 RGB `(T, H, W, 3)`: floats in [0, 1] scaled by 255, greyscale
    repeated, alpha dropped."""
    if pixels.dtype != np.uint8:
        values = pixels.astype(np.float64)
        peak = 1.0 if pixels.dtype.kind == "f" and values.size and values.max() <= 1.0 else 255.0
        pixels = np.clip(np.rint(values * (255.0 / peak)), 0, 255).astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3])


def _array_video(video, name: str) -> np.ndarray:
    """A `(T, H, W, C)` or `(T, C, H, W)` array / tensor -> uint8 `(T, H, W, 3)`."""
    pixels = video.numpy(force=True) if isinstance(video, torch.Tensor) else np.asarray(video)
    if pixels.ndim != 4:
        raise VideoInputError(f"{name} has shape {pixels.shape}: expected (frames, height, width, channels)")
    if pixels.shape[-1] not in (1, 3, 4) and pixels.shape[1] in (1, 3, 4):
        pixels = pixels.transpose(0, 2, 3, 1)
    if pixels.shape[-1] not in (1, 3, 4):
        raise VideoInputError(f"{name} has shape {pixels.shape}: expected 1, 3 or 4 channels")
    return _frames_to_uint8(pixels)


def _frame_list_video(frames, name: str) -> np.ndarray:
    """A list of PIL frames or `(H, W, C)` arrays of one size -> uint8 `(T, H, W, 3)`."""
    from PIL import Image

    arrays = []
    for frame in frames:
        if isinstance(frame, Image.Image):
            arrays.append(np.asarray(frame.convert("RGB")))
        else:
            pixels = frame.numpy(force=True) if isinstance(frame, torch.Tensor) else np.asarray(frame)
            arrays.append(pixels[..., None] if pixels.ndim == 2 else pixels)
    sizes = [a.shape[:2] for a in arrays]
    odd = next((i for i, size in enumerate(sizes) if size != sizes[0]), None)
    if odd is not None:
        raise VideoInputError(
            f"{name} has frames of different sizes: frame 0 is {sizes[0][0]}x{sizes[0][1]}, frame {odd} is "
            f"{sizes[odd][0]}x{sizes[odd][1]} (height x width); every frame of a video must have one size"
        )
    return _array_video(np.stack(arrays), name)


def _read_with_pil(path: str):
    """Frames of an image file (GIF, APNG, animated WebP, or a still image as one frame) and its frame rate, or None
    when PIL cannot identify the file."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
            duration = image.info.get("duration")
    except UnidentifiedImageError:
        return None
    except (OSError, ValueError, SyntaxError) as error:
        raise VideoInputError(f"cannot read the video {path}: {error}") from None
    return frames, (1000.0 / duration if duration else None)


def _read_with_pyav(path: str, num_frames, fps):
    """Frames sampled from a container PyAV reads (mp4, webm, ...), decoding only up to the last kept frame when the
    container tells its frame count."""
    try:
        import av
    except ImportError:
        raise VideoInputError(
            f"reading the video {path} needs PyAV (pip install 'llava-vr[video]'), or pass its frames (a list of PIL "
            "images or a (frames, height, width, 3) array)"
        ) from None
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoInputError(f"cannot read the video {path}: it has no video stream")
            stream = container.streams.video[0]
            video_fps = float(stream.average_rate) if stream.average_rate else None
            total = int(stream.frames or 0)
            wanted = sample_frame_indices(total, num_frames, fps, video_fps) if total else None
            last = int(wanted[-1]) if wanted is not None and len(wanted) else None
            frames = []
            for index, frame in enumerate(container.decode(stream)):
                frames.append(frame.to_ndarray(format="rgb24"))
                if last is not None and index >= last:
                    break
    except VideoInputError:
        raise
    except Exception as error:  # PyAV's own errors (InvalidDataError, a ValueError, ...) subclass many types
        raise VideoInputError(f"cannot read the video {path}: {error}") from None
    if wanted is not None and len(frames) > last:
        return np.stack([frames[i] for i in wanted]), None
    return frames, video_fps


def load_video(video, num_frames: int | None = None, fps: float | None = None, name: str = "video") -> np.ndarray:
    """One video (see the module docstring for what it may be) -> uint8 `(T, H, W, 3)`, frames sampled uniformly when
    `num_frames` / `fps` is set. Raises `ValueError` naming the problem: no frames, frames of different sizes, an
    unreadable file, PyAV missing for a container, more frames asked for than there are."""
    video_fps = None
    if isinstance(video, (str, os.PathLike)):
        path = str(video)
        if not Path(path).is_file():
            raise VideoInputError(f"{name}: no such video file {path}")
        read = _read_with_pil(path)
        if read is None and Path(path).suffix.lower() in PIL_VIDEO_SUFFIXES:
            raise VideoInputError(f"cannot read the video {path}: not a readable {Path(path).suffix} image sequence")
        if read is None:
            frames, video_fps = _read_with_pyav(path, num_frames, fps)
            if isinstance(frames, np.ndarray):  # already sampled while decoding
                return _frames_to_uint8(frames)
        else:
            frames, video_fps = read
        if not len(frames):
            raise VideoInputError(f"{name} ({path}) has no frames")
        pixels = _frame_list_video(frames, f"{name} ({path})")
    elif isinstance(video, (list, tuple)):
        if not len(video):
            raise VideoInputError(f"{name} has no frames")
        pixels = _frame_list_video(video, name)
    elif hasattr(video, "ndim"):
        pixels = _array_video(video, name)
    else:
        raise VideoInputError(
            f"{name} is a {type(video).__name__}: expected a list of frames, a (frames, height, width, 3) array or "
            "tensor, or a path to a video file"
        )
    if pixels.shape[0] == 0:
        raise VideoInputError(f"{name} has no frames")
    return pixels[sample_frame_indices(pixels.shape[0], num_frames, fps, video_fps)]


def _is_frame(item) -> bool:
    from PIL import Image

    return isinstance(item, Image.Image) or (hasattr(item, "ndim") and item.ndim in (2, 3))


def is_video(item) -> bool:
    """Whether `item` is one video: a path, a 4D array / tensor, or a non-empty list of frames."""
    if isinstance(item, (str, os.PathLike)):
        return True
    if hasattr(item, "ndim") and not isinstance(item, (list, tuple)):
        return item.ndim == 4
    return isinstance(item, (list, tuple)) and len(item) > 0 and all(_is_frame(frame) for frame in item)


def flat_videos(videos) -> list:
    """Any nesting of videos (one video, a list of videos, lists of videos per prompt, a 5D batch) -> a flat list of
    single videos. `None`, `[]` and empty per-prompt lists give no videos (lmms-eval passes `videos=[]`)."""
    if videos is None:
        return []
    if is_video(videos):
        return [videos]
    if hasattr(videos, "ndim") and not isinstance(videos, (list, tuple)):
        if videos.ndim == 5:
            return list(videos)
        raise VideoInputError(f"videos of shape {tuple(videos.shape)}: expected (frames, height, width, channels)")
    if isinstance(videos, (list, tuple)):
        return [video for item in videos for video in flat_videos(item)]
    raise VideoInputError(f"videos must be videos or lists of videos, got {type(videos).__name__}")


class LlavaVRVideoProcessor:
    """Loads, samples and preprocesses videos for `LlavaVRProcessor` (its `video_processor`), reading the tile size,
    resampling filter, rescale factor and normalisation of the processor's image processor.

    Args:
        tile_size (`int`): side every frame is resized to (the model's `vision_config.image_size`).
        image_mean, image_std (`list[float]`): per-channel normalisation.
        rescale_factor (`float`, *optional*, defaults to 1/255).
        resample (`int`, *optional*, defaults to 3 = bicubic): PIL filter number (nearest 0, bilinear 2, bicubic 3).
        num_frames (`int`, *optional*): default number of frames sampled uniformly from each video (`None`: all).
    """

    model_input_names = ["pixel_values_videos"]

    def __init__(self, tile_size, image_mean, image_std, rescale_factor=1 / 255, resample=3, num_frames=None):
        self.tile_size = int(tile_size)
        self.image_mean = [float(x) for x in image_mean]
        self.image_std = [float(x) for x in image_std]
        self.rescale_factor = float(rescale_factor)
        self.mode = _RESAMPLE_MODES.get(int(resample) if resample is not None else 3, "bicubic")
        self.num_frames = num_frames

    @classmethod
    def from_image_processor(cls, image_processor, tile_size: int, num_frames=None) -> "LlavaVRVideoProcessor":
        return cls(
            tile_size,
            image_processor.image_mean,
            image_processor.image_std,
            getattr(image_processor, "rescale_factor", 1 / 255),
            getattr(image_processor, "resample", 3),
            num_frames,
        )

    def preprocess_frames(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 `(T, H, W, 3)` -> float `(T, 3, tile, tile)`: resized (antialiased; rounded to 8 bits, as torchvision
        resizes a uint8 tensor), rescaled, normalised. All frames of the video in one call."""
        frames = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
        size = [self.tile_size, self.tile_size]
        if list(frames.shape[-2:]) != size:
            antialias = self.mode in ("bilinear", "bicubic")
            frames = F.interpolate(frames, size=size, mode=self.mode, antialias=antialias).round().clamp(0, 255)
        mean = torch.tensor(self.image_mean)[:, None, None]
        std = torch.tensor(self.image_std)[:, None, None]
        return (frames * self.rescale_factor - mean) / std

    def __call__(self, videos, num_frames=None, fps=None, do_sample_frames=None, return_tensors=None, **kwargs):
        """Videos (any nesting, see `flat_videos`) -> `{"pixel_values_videos": (num_videos, frames, 3, tile, tile)}`.
        Frames are sampled when `num_frames` / `fps` is given (or this processor's `num_frames` is set), unless
        `do_sample_frames=False`. Every video must end with the same number of frames (`ValueError` otherwise)."""
        from transformers.feature_extraction_utils import BatchFeature

        if do_sample_frames is False:
            num_frames = fps = None
        elif num_frames is None and fps is None:
            num_frames = self.num_frames
        videos = flat_videos(videos)
        loaded = [load_video(v, num_frames, fps, name=f"video {i}") for i, v in enumerate(videos)]
        counts = [len(v) for v in loaded]
        if len(set(counts)) > 1:
            raise VideoInputError(
                f"the videos have different frame counts {counts}: pass num_frames=N to sample N frames from each "
                "(pixel_values_videos holds one frame count per call, as LLaVA-OneVision's)"
            )
        if not loaded:
            return BatchFeature({}, tensor_type=return_tensors)
        pixels = torch.stack([self.preprocess_frames(v) for v in loaded])
        return BatchFeature({"pixel_values_videos": pixels}, tensor_type=return_tensors)


__all__ = ["LlavaVRVideoProcessor", "VideoInputError", "flat_videos", "is_video", "load_video", "sample_frame_indices"]
