# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""LLaVA-VR configuration: LLaVA-NeXT / LLaVA-OneVision plus Vision Remember."""

import math
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig

from .packing_llava_vr import VIDEO_POOL_STRIDES, grid_pinpoints, video_token_grid
from .registries_llava_vr import Formulation, ProjectorType, SaliencyMode, VisionRememberInteraction, WindowLayout

# Default tower: CLIP-ViT-L/14 at 336 px (LLaVA-NeXT / LLaVA-OneVision-SI's).
CLIP_VIT_L_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "patch_size": 14,
    "image_size": 336,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "projection_dim": 768,
    "vocab_size": 32000,
}


def _sub_config(value, default_model_type: str, defaults: dict) -> PreTrainedConfig:
    """A sub-config from a config (kept), a dict (its `model_type`, else `default_model_type`) or `None`
    (`default_model_type` with `defaults`)."""
    if isinstance(value, PreTrainedConfig):
        return value
    kwargs = dict(defaults if value is None else value)
    return AutoConfig.for_model(kwargs.pop("model_type", default_model_type), **kwargs)


@strict
class LlavaVRConfig(PreTrainedConfig):
    r"""
    Configuration of [`LlavaVRForConditionalGeneration`]: a vision tower (CLIP or SigLIP), a projector that may
    compress each tile's vision tokens, a Qwen2 LLM, and Vision Remember (VR) modules that let the vision tokens
    re-read multi-level vision features before chosen decoder layers.

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            Vision tower config (`clip_vision_model` or `siglip_vision_model`). Defaults to CLIP-ViT-L/14-336.
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            LLM config (`qwen2`). Defaults to Qwen2's defaults.
        image_token_index (`int`, *optional*, defaults to 151646):
            Id of the `<image>` placeholder token (alias `image_token_id`).
        video_token_index (`int`, *optional*, defaults to 151647):
            Id of the `<video>` placeholder token (alias `video_token_id`; LLaVA-OneVision's default).
        projector_hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the projector MLP.
        vision_feature_select_strategy (`str`, *optional*, defaults to `"default"`):
            `"default"` drops the tower's CLS token, `"full"` keeps every token (SigLIP has none to drop).
        vision_feature_layer (`int` or `list[int]`, *optional*, defaults to -2):
            Tower hidden state(s) fed to the projector (index 0 = embeddings); several are concatenated on channels.
        multimodal_projector_bias (`bool`, *optional*, defaults to `True`):
            Whether the projector MLP's linear layers have biases.
        image_grid_pinpoints (`list[list[int]]`, *optional*):
            AnyRes resolutions `(height, width)`, multiples of the tile size.
        vision_aspect_ratio (`str`, *optional*, defaults to `"anyres_max_9"`):
            `"anyres_max_N"`: after unpadding, the crop tokens are bilinearly down-interpolated when they exceed
            about N tiles' worth (LLaVA-OneVision). `"anyres"`: no cap (LLaVA-NeXT). `"pad"`: no AnyRes, every
            image is encoded by its base tile only (`g*g` tokens + one newline; the paper's stage 1).
        multi_image_anyres (`bool`, *optional*, defaults to `False`):
            `False` (LLaVA-OneVision): a prompt with several images encodes each with its base tile only (+ one
            newline). `True` (LLaVA-NeXT): every image is tiled with AnyRes.
        projector_type (`str`, *optional*, defaults to `"adaptive_avg_pool"`):
            `mlp` (no compression, 576 tokens per 336-px CLIP tile), or a compressing projector giving
            `projector_pooled_grid_size**2` tokens per tile (144 for CLIP-336): `adaptive_avg_pool` (2D adaptive
            average pooling then the MLP), `pixel_shuffle` (2x2 space-to-depth, LayerNorm, MLP), `ldpv2` (MLP,
            pooling, depthwise-conv positional residual), `tokenpacker` (pooled queries re-read their region of the
            full-resolution features by cross-attention, then the MLP) or `saliency_top_k` (VisionZip-style: the
            `g*g` patches of highest feature norm, in raster order, then the MLP).
        projector_pooled_grid_size (`int`, *optional*):
            Token grid side per tile for the compressing projectors; defaults to `ceil(patch_grid / 2)` (12 for
            CLIP-336's 24x24, 14 for SigLIP-384's 27x27). `pixel_shuffle` requires that default.
        vision_remember_layers (`list[int]`, *optional*, defaults to `[1, 4]`):
            0-based decoder layers; VR rewrites the vision-token rows of the hidden states entering each. `[]` = no VR.
        vision_remember_feature_layers (`list[int]`, *optional*, defaults to `[13, 18, 23]`):
            Tower hidden states (index 0 = embeddings) concatenated on channels into the multi-level features.
        vision_remember_interaction (`str`, *optional*, defaults to `"sela"`):
            Token-feature cross-attention, one of `registries_llava_vr.VR_INTERACTIONS`: `sela` (saliency-enhanced
            local attention over each token's feature window), `deformable` (multi-level deformable attention around
            the token's cell), `global` (every token of an image attends to every feature cell of that image, all
            tiles: the paper's Tab. 4b) or `global_tile` (ablation: every cell of the token's own tile only). Each
            interaction's own settings are checked by its class when the model is built (e.g. `sela`'s window).
        vision_remember_window_size (`int`, *optional*):
            Side `s` of the feature window a token reads with `sela`. `None`: the token's own cell region
            (`patch_grid / token_grid`, 2 for 24 -> 12; adaptive, like adaptive pooling, when it does not divide).
        vision_remember_window_layout (`str`, *optional*, defaults to `"partition"`):
            How `sela` windows larger than a token's region are laid out, one of
            `registries_llava_vr.WINDOW_LAYOUTS`: `partition` (the paper, Swin-style: aligned, non-overlapping
            `s x s` windows, each shared by the `(s/2) x (s/2)` tokens over it) or `centred` (every token its own
            overlapping window centred on its region, clipped at the tile border).
        vision_remember_saliency (`str`, *optional*, defaults to `"auto"`):
            Saliency weighting of the values: `cls` = `sigmoid(q_cls . k_p / sqrt(d))` per head, averaged over heads,
            computed from the saliency layer's own q/k projections; `mean_token` = the same with the mean query of all
            tokens (for towers without CLS, e.g. SigLIP); `off` = all ones. `auto` is resolved at construction and
            stored: for `sela`, `cls` when the tower has a CLS token (CLIP), else `mean_token`; `off` for the other
            interactions (the paper's saliency belongs to SELA: "Our SELA not only considers the local context but
            also the saliency enhancement").
        vision_remember_saliency_layer (`int`, *optional*):
            Tower hidden state whose producing encoder layer's attention gives the saliency (hidden state `i` is
            produced by encoder layer `i - 1`). Resolved to the last of `vision_remember_feature_layers`.
        vision_remember_hidden_size (`int`, *optional*):
            Width `d` of VR's attention. Resolved to the multi-level feature width `vision_remember_feature_size`
            (3072 for CLIP-L with 3 levels; paper §4.2: the token is expanded "to match the vision features
            dimension").
        vision_remember_num_heads (`int`, *optional*):
            Heads of VR's attentions. Resolved to the tower's number of heads.
        vision_remember_deformable_points (`int`, *optional*, defaults to 4):
            Sampling points per head and level for `deformable`.
        vision_remember_self_attention (`bool`, *optional*, defaults to `True`):
            Token bidirectional self-attention among one image's vision tokens after the cross-attention (paper v2;
            `False` is the paper's v1, the model of all its tables).
        vision_remember_formulation (`str`, *optional*, defaults to `"auto"`):
            How the cross-attention is computed, with equal results, one of `registries_llava_vr.FORMULATIONS`:
            `plain` (keys and values projected for every feature cell), `absorbed` (the projections moved onto the
            queries and the attended features, in cache-sized blocks, see `token_feature_attention_llava_vr.py`) or
            `auto` (for each call, whichever has the lower estimated time: FLOPs plus bytes moved, per device type and
            dtype; `plain` wherever folding the projections would not be exact).
        spatial_pool_stride (`int`, *optional*, defaults to 2):
            Video frames (LLaVA-OneVision's layout: every frame through the tower at the base tile resolution, the
            projector, then bilinear pooling of the frame's token grid): the pooled grid side is
            `ceil(token_grid / spatial_pool_stride)`, so a frame gives `ceil(g / s)**2` tokens (2: OneVision's 2x2,
            SigLIP-384 + `mlp` 27x27 -> 14x14 = 196; 3 -> 9x9 = 81; 4 -> 7x7 = 49), and a video
            `frames * ceil(g / s)**2 + 1` (one `image_newline` per video). 1 keeps the projector's grid. One of 1-4
            (the name of Transformers' LLaVA-NeXT-Video setting; lmms-lab's `mm_spatial_pool_stride`).
        vision_remember_video (`bool`, *optional*, defaults to `True`):
            Whether Vision Remember rewrites video tokens too (the paper leaves video to future work; this package's
            choice): each video token re-reads its own frame's multi-level features, a frame being a base tile with a
            `ceil(g / s)` token grid (`sela` windows of the frame, its saliency, `deformable` around the token's cell;
            `global` and the token self-attention span one frame). A `vision_remember_window_size` `w` is scaled to
            `w * spatial_pool_stride` feature cells for frames (clipped to the feature grid), keeping the ratio of
            window to token region. `False`: video tokens go through the LLM as projected (images keep VR).

    Every resolved Vision Remember setting is stored explicitly, so `config.json` pins the model.
    """

    model_type = "llava_vr"
    _auto_class = "AutoConfig"  # save_pretrained copies this file beside config.json (trust_remote_code)
    attribute_map = {"image_token_id": "image_token_index", "video_token_id": "video_token_index"}
    # Plain `sub_configs` (5.19 has no `SubConfigSpec`): `__post_init__` builds them the same way on every version.
    sub_configs = {"vision_config": AutoConfig, "text_config": AutoConfig}

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_index: int = 151646
    video_token_index: int = 151647
    projector_hidden_act: str = "gelu"
    vision_feature_select_strategy: Literal["default", "full"] = "default"
    vision_feature_layer: int | list[int] = -2
    multimodal_projector_bias: bool = True
    tie_word_embeddings: bool = False
    image_grid_pinpoints: list | None = None
    vision_aspect_ratio: str = "anyres_max_9"
    multi_image_anyres: bool = False
    projector_type: ProjectorType = "adaptive_avg_pool"
    projector_pooled_grid_size: int | None = None
    vision_remember_layers: list[int] | None = None
    vision_remember_feature_layers: list[int] | None = None
    vision_remember_interaction: VisionRememberInteraction = "sela"
    vision_remember_window_size: int | None = None
    vision_remember_window_layout: WindowLayout = "partition"
    vision_remember_saliency: SaliencyMode = "auto"
    vision_remember_saliency_layer: int | None = None
    vision_remember_hidden_size: int | None = None
    vision_remember_num_heads: int | None = None
    vision_remember_deformable_points: int = 4
    vision_remember_self_attention: bool = True
    vision_remember_formulation: Formulation = "auto"
    spatial_pool_stride: int = 2
    vision_remember_video: bool = True

    def __post_init__(self, **kwargs):
        self.vision_config = _sub_config(self.vision_config, "clip_vision_model", CLIP_VIT_L_336)
        self.text_config = _sub_config(self.text_config, "qwen2", {})
        super().__post_init__(**kwargs)
        if self.image_grid_pinpoints is None:
            self.image_grid_pinpoints = grid_pinpoints(self.vision_config.image_size, 6, 6)
        if self.vision_remember_layers is None:
            self.vision_remember_layers = [1, 4]
        if self.vision_remember_feature_layers is None:
            self.vision_remember_feature_layers = [13, 18, 23]
        self.vision_remember_layers = [int(i) for i in self.vision_remember_layers]
        self.vision_remember_feature_layers = [int(i) for i in self.vision_remember_feature_layers]
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = self.text_config.tie_word_embeddings
        self._resolve_vision_remember()

    def _resolve_vision_remember(self):
        """Stores the value every `None` / `auto` Vision Remember setting stands for (see the class docstring)."""
        vision = self.vision_config
        if self.vision_remember_hidden_size is None:
            self.vision_remember_hidden_size = self.vision_remember_feature_size
        if self.vision_remember_num_heads is None:
            self.vision_remember_num_heads = vision.num_attention_heads
        if self.vision_remember_saliency_layer is None and self.vision_remember_feature_layers:
            self.vision_remember_saliency_layer = self.vision_remember_feature_layers[-1]
        if self.vision_remember_saliency == "auto":
            self.vision_remember_saliency = _auto_saliency(vision, self.vision_remember_interaction)

    def validate_architecture(self):
        """Runs at construction (`@strict`): raises `ValueError` naming the first inconsistent setting. The settings
        of one interaction (`sela`'s window) are checked by its class when the model is built (`check_config` of
        `vision_remember_llava_vr.CROSS_ATTENTION_CLASSES`), which keeps this file free of the modeling code."""
        super().validate_architecture()
        if not (self.vision_aspect_ratio in ("anyres", "pad") or self.vision_aspect_ratio.startswith("anyres_max_")):
            raise ValueError(
                f"vision_aspect_ratio={self.vision_aspect_ratio!r}: expected 'anyres', 'anyres_max_N' or 'pad'"
            )
        num_text_layers = self.text_config.num_hidden_layers
        bad = [i for i in self.vision_remember_layers if not 0 <= i < num_text_layers]
        if bad:
            raise ValueError(
                f"vision_remember_layers {bad} are outside the LLM's {num_text_layers} decoder layers: valid 0-based "
                f"layers are 0 to {num_text_layers - 1}"
            )
        if len(set(self.vision_remember_layers)) != len(self.vision_remember_layers):
            raise ValueError(f"vision_remember_layers {self.vision_remember_layers} has duplicates")
        num_vision_layers = self.vision_config.num_hidden_layers
        if self.vision_remember_layers:
            layers = list(self.vision_remember_feature_layers) + [self.vision_remember_saliency_layer]
            bad = [i for i in layers if not -num_vision_layers <= i <= num_vision_layers]
            if bad or not self.vision_remember_feature_layers:
                raise ValueError(
                    f"vision_remember_feature_layers {self.vision_remember_feature_layers} must be non-empty "
                    f"hidden-state indices of the tower's {num_vision_layers} layers (0 = embeddings .. "
                    f"{num_vision_layers})"
                )
        # the token grids each projector class can produce, and whether its tokens are grid cells (VR's windows)
        from .projectors_llava_vr import check_token_budget, check_vision_remember_partner

        check_token_budget(self)
        check_vision_remember_partner(self)
        if self.vision_remember_hidden_size % self.vision_remember_num_heads:
            raise ValueError("vision_remember_hidden_size must be divisible by vision_remember_num_heads")
        if isinstance(self.spatial_pool_stride, bool) or self.spatial_pool_stride not in VIDEO_POOL_STRIDES:
            raise ValueError(
                f"spatial_pool_stride={self.spatial_pool_stride!r}: the video frames' pooling stride must be one of "
                f"{VIDEO_POOL_STRIDES} (2 = LLaVA-OneVision's 2x2 bilinear pooling)"
            )

    # ---- derived quantities (not serialised) -------------------------------------------------------------------
    @property
    def patch_grid_size(self) -> int:
        """Side of one tile's patch grid in the tower (24 for CLIP-336, 27 for SigLIP-384)."""
        return self.vision_config.image_size // self.vision_config.patch_size

    @property
    def token_grid_size(self) -> int:
        """Side of one tile's vision-token grid after the projector (24 for `mlp`, 12 pooled on CLIP-336)."""
        if self.projector_type == "mlp":
            return self.patch_grid_size
        return self.projector_pooled_grid_size or math.ceil(self.patch_grid_size / 2)

    @property
    def num_image_tokens_per_tile(self) -> int:
        return self.token_grid_size**2

    @property
    def video_token_grid_size(self) -> int:
        """Side of one video frame's token grid after the projector and the pooling (`ceil(g / spatial_pool_stride)`:
        14 for SigLIP-384 + `mlp` at stride 2)."""
        return video_token_grid(self.token_grid_size, self.spatial_pool_stride)

    @property
    def num_video_tokens_per_frame(self) -> int:
        return self.video_token_grid_size**2

    @property
    def video_vision_remember_window_size(self) -> int | None:
        """`sela`'s window for video tokens: `vision_remember_window_size * spatial_pool_stride` feature cells,
        clipped to the feature grid (`None` stays `None`: the token's own region, `patch_grid / video grid`)."""
        if self.vision_remember_window_size is None:
            return None
        return min(self.vision_remember_window_size * self.spatial_pool_stride, self.patch_grid_size)

    @property
    def vision_remember_feature_size(self) -> int:
        """Channels `C_ml` of the multi-level features VR reads: the tower hidden states of
        `vision_remember_feature_layers` concatenated, `levels x tower width` (3072 for CLIP-L with 3 levels)."""
        return len(self.vision_remember_feature_layers) * self.vision_config.hidden_size


def _auto_saliency(vision_config, interaction: str) -> str:
    """What `vision_remember_saliency="auto"` stands for."""
    if interaction != "sela":
        return "off"
    return "cls" if vision_config.model_type == "clip_vision_model" else "mean_token"


__all__ = ["LlavaVRConfig"]
