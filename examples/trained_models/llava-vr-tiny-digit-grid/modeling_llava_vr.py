# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""LLaVA-VR: LLaVA-NeXT / LLaVA-OneVision with Vision Remember inside the Qwen2 decoder.

Class split as in Transformers' LLaVA-OneVision: `LlavaVRModel` (tower + projector + LLM, no head) under
`LlavaVRForConditionalGeneration`. Vision Remember lives in `LlavaVRTextModel`, a Qwen2 text model that runs its
decoder layers itself and calls the VR module of a layer before that layer (the shape of Qwen3-VL's DeepStack).
"""

import contextlib
import copy
import json
import math
import os
import shutil
import sys
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.modeling_utils import PreTrainedModel
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2DecoderLayer,
    Qwen2PreTrainedModel,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
)
from transformers.utils import is_torchdynamo_compiling
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .compat_llava_vr import (
    LAYER_CACHE,
    MASK_CACHE,
    OUTPUT_CACHE,
    TowerHiddenStates,
    slice_logits_to_keep,
    take_cache,
)
from .configuration_llava_vr import LlavaVRConfig
from .generation_llava_vr import LlavaVRGenerationMixin
from .initialization_llava_vr import init_llava_vr_leaf
from .outputs_llava_vr import LlavaVRCausalLMOutputWithPast, LlavaVRImageFeaturesOutput, LlavaVRModelOutputWithPast
from .packing_llava_vr import (
    anyres_layout,
    images_use_anyres,
    pack_tile_tokens,
    packed_token_cells,
    pool_frame_tokens,
    video_token_cells,
)
from .projectors_llava_vr import build_projector
from .saliency_llava_vr import SaliencyRecorder, tower_encoder_layers
from .vision_remember_llava_vr import (
    CROSS_ATTENTION_CLASSES,
    VisionRemember,
    VisionRememberFeatures,
    VisionRememberInputs,
)

# Written into config.json's `auto_map` on save (register_for_auto_class alone records only the saved class).
AUTO_MAP = {
    "AutoConfig": "configuration_llava_vr.LlavaVRConfig",
    "AutoModel": "modeling_llava_vr.LlavaVRModel",
    "AutoModelForImageTextToText": "modeling_llava_vr.LlavaVRForConditionalGeneration",
}

VISION_ENCODER_LAYER_CLASSES = {"clip_vision_model": "CLIPEncoderLayer", "siglip_vision_model": "SiglipEncoderLayer"}


# Skip-list fields of Transformers' quantization configs (bitsandbytes; torchao and most others).
QUANTIZATION_SKIP_FIELDS = ("llm_int8_skip_modules", "modules_to_not_convert")


def with_default_unquantized_modules(quantization_config, unquantized_modules: tuple[str, ...]):
    """A copy of `quantization_config` (object or dict) whose unset skip list is `unquantized_modules`; the config as
    given when it has a skip list (an explicit `[]` too) or none to set. Transformers' own default (tied weights,
    `lm_head`) is replaced, so `unquantized_modules` must name `lm_head` itself."""
    if quantization_config is None:
        return None
    if isinstance(quantization_config, dict):
        from transformers.quantizers.auto import AutoQuantizationConfig

        quantization_config = AutoQuantizationConfig.from_dict(quantization_config)
    field = next((f for f in QUANTIZATION_SKIP_FIELDS if hasattr(quantization_config, f)), None)
    if field is None or getattr(quantization_config, field) is not None:
        return quantization_config
    quantization_config = copy.deepcopy(quantization_config)
    setattr(quantization_config, field, list(unquantized_modules))
    return quantization_config


def flatten_tiles(pixel_values: torch.Tensor, layouts: list, tile: int) -> torch.Tensor:
    """`(num_images, max_tiles, 3, tile, tile)` padded per image, or already `(total_tiles, 3, tile, tile)` ->
    `(total_tiles, 3, tile, tile)` holding each image's `layout.num_tiles`; raises `ValueError` on any mismatch."""
    if pixel_values.dim() == 5:
        if pixel_values.shape[0] != len(layouts):
            raise ValueError(f"pixel_values hold {pixel_values.shape[0]} images but image_sizes {len(layouts)}")
        if max(layout.num_tiles for layout in layouts) > pixel_values.shape[1]:
            raise ValueError("pixel_values have fewer tiles than image_sizes imply: wrong image_grid_pinpoints?")
        pixel_values = torch.cat(
            [pv[: layout.num_tiles] for pv, layout in zip(pixel_values, layouts, strict=False)], dim=0
        )
    elif pixel_values.dim() != 4:
        raise ValueError(f"pixel_values of shape {tuple(pixel_values.shape)}, expected 4 or 5 dimensions")
    total = sum(layout.num_tiles for layout in layouts)
    if pixel_values.shape[0] != total:
        raise ValueError(f"pixel_values hold {pixel_values.shape[0]} tiles, image_sizes imply {total}")
    if tuple(pixel_values.shape[-3:]) != (3, tile, tile):
        shape = tuple(pixel_values.shape[-3:])
        raise ValueError(f"pixel_values tiles are {shape}, the tower expects (3, {tile}, {tile})")
    return pixel_values


def video_vision_remember_inputs(
    video_mask: torch.Tensor, video_features: VisionRememberFeatures, config
) -> VisionRememberInputs:
    """What every VR layer reads of a batch's videos: `VisionRememberInputs.build` over the `<video>` positions
    `video_mask` `(batch, seq)`, each frame a tile of `config.video_token_grid_size`-side pooled tokens, read with
    windows of `config.video_vision_remember_window_size`, and its own group (token self-attention and `global` span
    one frame). `video_features`: per video `(frames, G*G, C_ml)` features, `(frames, G*G)` saliency, token cells
    `video_token_cells(frames, gv)`, as `get_video_features` gives them."""
    num_tokens, num_cells = int(video_mask.sum()), sum(int(cells.shape[0]) for cells in video_features.token_cells)
    if num_tokens != num_cells:
        raise ValueError(
            f"Video features and video tokens do not match, tokens: {num_tokens}, features: {num_cells}: Vision "
            "Remember needs every token of a video in one forward (chunked prefill or truncation through a video is "
            "not supported)"
        )
    interaction = CROSS_ATTENTION_CLASSES[config.vision_remember_interaction]
    return VisionRememberInputs.build(
        video_mask,
        video_features,
        config,
        interaction,
        token_grid=config.video_token_grid_size,
        window_size=config.video_vision_remember_window_size,
        group_by_tile=True,
    )


class LlavaVRPreTrainedModel(PreTrainedModel):
    config: LlavaVRConfig
    config_class = LlavaVRConfig
    base_model_prefix = "model"
    input_modalities = ("image", "video", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True  # a decode step is a plain Qwen2 step (VR and the tower run at prefill only)
    _can_record_outputs = {"hidden_states": Qwen2DecoderLayer}
    # Kept full-precision `nn.Linear`s by `from_pretrained(..., quantization_config=...)` unless the config names its
    # own skip list: what a QLoRA run trains fully (projector, VR) and the output head. The tower is quantized, as in
    # Transformers' LLaVA models; the saliency reads whatever modules sit in it (see `saliency_llava_vr.py`).
    _default_unquantized_modules: tuple[str, ...] = ()

    @classmethod
    def from_pretrained(cls, *args, quantization_config=None, **kwargs):
        """`PreTrainedModel.from_pretrained`, with `_default_unquantized_modules` as the default skip list of a
        `quantization_config` that sets none (`llm_int8_skip_modules` / `modules_to_not_convert` left `None`)."""
        quantization_config = with_default_unquantized_modules(quantization_config, cls._default_unquantized_modules)
        if quantization_config is not None:
            kwargs["quantization_config"] = quantization_config
        return super().from_pretrained(*args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves weights (safetensors), config with the full `auto_map`, and this package's code files beside them,
        so the folder loads with `trust_remote_code=True` where `llava_vr` is not installed.

        FSDP2's `fully_shard` swaps in a dynamic `FSDP<Name>` subclass defined in torch, for which Transformers would
        copy torch's `_fsdp_*.py` files and name them in `auto_map`: this model's own files and `AUTO_MAP` are written
        instead. safetensors writes its files owner-only (0600); they get the umask's permissions like every other file
        of the folder, so a serving container or another user can read them."""
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            if type(self).__module__ != __name__:
                self._restore_own_code_files(Path(save_directory))
            umask = os.umask(0)
            os.umask(umask)
            for weights in Path(save_directory).glob("*.safetensors"):
                weights.chmod(0o666 & ~umask)
        return result

    def _set_gradient_checkpointing(self, *args, **kwargs):
        """As `PreTrainedModel`'s (every layer with a `gradient_checkpointing` flag set), except that the tower layer
        giving the saliency is always checkpointed without reentry, so the saliency keeps its gradient under
        reentrant checkpointing (`SaliencyRecorder.checkpoint_without_reentry`)."""
        super()._set_gradient_checkpointing(*args, **kwargs)
        for module in self.modules():
            if isinstance(module, LlavaVRModel) and module._saliency_recorder is not None:
                module._saliency_recorder.checkpoint_without_reentry(module.vision_tower)

    def _restore_own_code_files(self, folder: Path):
        wrapper_file = sys.modules[type(self).__module__].__file__
        own_files = [__file__, *get_relative_import_files(__file__)]
        own_names = {Path(f).name for f in own_files}
        for stray in [wrapper_file, *get_relative_import_files(wrapper_file)]:
            if Path(stray).name not in own_names:
                (folder / Path(stray).name).unlink(missing_ok=True)
        for needed in own_files:
            shutil.copyfile(needed, folder / Path(needed).name)
        self.config.auto_map = dict(AUTO_MAP)
        config_file = folder / "config.json"
        config = json.loads(config_file.read_text())
        config["auto_map"] = dict(AUTO_MAP)
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    def post_init(self):
        super().post_init()
        # Transformers merges the children's lists (CLIP's and SigLIP's name text-tower classes that do not exist
        # here and break accelerate's FSDP auto-wrap): declare exactly the blocks this model has.
        vision_layer = VISION_ENCODER_LAYER_CLASSES.get(self.config.vision_config.model_type)
        self._no_split_modules = {"Qwen2DecoderLayer", "VisionRemember"} | ({vision_layer} if vision_layer else set())

    def initialize_weights(self):
        """Initialises Transformers' own sub-models (the CLIP / SigLIP tower) first, each by its own full rules, then
        the rest. For custom code Transformers skips the initialisers of modules without parameters of their own
        (CLIP's scaled attention / MLP inits, SigLIP's xavier / lecun inits), so tower weights missing from a
        checkpoint would get a generic N(0, 0.02). Weights already loaded are never touched (their flags)."""
        for module in self.modules():
            if module is not self and isinstance(module, PreTrainedModel) and not module.is_custom_code():
                module.initialize_weights()
        super().initialize_weights()

    @torch.no_grad()
    def _init_weights(self, module):
        if init_llava_vr_leaf(module):
            return
        super()._init_weights(module)
        if isinstance(module, LlavaVRModel):
            init.normal_(module.image_newline, mean=0.0, std=1 / math.sqrt(self.config.text_config.hidden_size))


class LlavaVRTextModel(Qwen2PreTrainedModel):
    """Qwen2 decoder (same key names as `Qwen2Model`) plus a `VisionRemember` module before each layer of
    `vision_remember_layers`. Holds VR, so its `_init_weights` runs VR's leaf inits (a fresh VR is the identity)."""

    def __init__(self, config: LlavaVRConfig):
        """`config`: the whole `LlavaVRConfig`; the decoder is built from its `text_config` (this model's `config`, as
        for any Transformers text model), the VR modules from the rest."""
        text_config = config.text_config
        super().__init__(text_config)
        self.padding_idx = text_config.pad_token_id
        self.vocab_size = text_config.vocab_size
        self.embed_tokens = nn.Embedding(text_config.vocab_size, text_config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [Qwen2DecoderLayer(text_config, layer_idx) for layer_idx in range(text_config.num_hidden_layers)]
        )
        self.norm = Qwen2RMSNorm(text_config.hidden_size, eps=text_config.rms_norm_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(config=text_config)
        self.gradient_checkpointing = False
        self.has_sliding_layers = "sliding_attention" in text_config.layer_types
        self.vision_remember = nn.ModuleDict({str(i): VisionRemember(config) for i in config.vision_remember_layers})
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        if not init_llava_vr_leaf(module):
            super()._init_weights(module)

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        vision_remember_inputs: VisionRememberInputs | tuple[VisionRememberInputs, ...] | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""
        vision_remember_inputs (`VisionRememberInputs` or a tuple of them, *optional*):
            Built by `LlavaVRModel` at a prefill with images and / or videos (one per modality: their token rows are
            disjoint, so applying them in turn equals one joint call); `None` (VR skipped) on decode steps and
            text-only input.
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        past_key_values = take_cache(past_key_values, kwargs)  # the cache's name: compat_llava_vr.py
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        if position_ids is None:
            past_seen_tokens = past_key_values.get_seq_length() if past_key_values is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            position_ids = position_ids.unsqueeze(0)

        if not isinstance(causal_mask_mapping := attention_mask, dict):
            mask_kwargs = {
                "config": self.config,
                "inputs_embeds": inputs_embeds,
                "attention_mask": attention_mask,
                MASK_CACHE: past_key_values,
                "position_ids": position_ids,
            }
            causal_mask_mapping = {"full_attention": create_causal_mask(**mask_kwargs)}
            if self.has_sliding_layers:
                causal_mask_mapping["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        vr_inputs_list = (
            vision_remember_inputs
            if isinstance(vision_remember_inputs, (tuple, list))
            else ((vision_remember_inputs,) if vision_remember_inputs is not None else ())
        )
        for i, decoder_layer in enumerate(self.layers[: self.config.num_hidden_layers]):
            if vision_remember_inputs is not None and str(i) in self.vision_remember:
                for vr_inputs in vr_inputs_list:
                    hidden_states = self.vision_remember[str(i)](hidden_states, vr_inputs, *vr_inputs.tensors)
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=causal_mask_mapping[self.config.layer_types[i]],
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                use_cache=use_cache,
                **{LAYER_CACHE: past_key_values},
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states, **{OUTPUT_CACHE: past_key_values if use_cache else None}
        )


def _refuse_vllm_transformers_backend(config) -> None:
    """vLLM loads a checkpoint whose architecture no plugin registered with its generic Transformers back end (it
    marks the text config's attention implementation `"vllm"`), which cannot run Vision Remember: refuse at load time,
    naming the missing install, instead of starting a server that fails every image request."""
    if getattr(config.text_config, "_attn_implementation", None) == "vllm":
        raise ValueError(
            "vLLM is loading LLaVA-VR with its generic Transformers back end, which cannot run Vision Remember: the "
            "llava-vr package, whose vLLM plugin serves this model, is not installed in this environment or is left "
            "out by VLLM_PLUGINS. Install it where vLLM runs (`pip install 'llava-vr[serve]'` with vLLM's GPU build, "
            "`pip install 'llava-vr[serve-cpu]'` with its CPU build; `pip install -e` in a checkout) and keep "
            "`llava_vr` in VLLM_PLUGINS if you set it"
        )


class LlavaVRModel(LlavaVRPreTrainedModel):
    """Vision tower + projector + `LlavaVRTextModel`, no LM head."""

    _auto_class = "AutoModel"
    _default_unquantized_modules = ("multi_modal_projector", "language_model.vision_remember")

    def __init__(self, config: LlavaVRConfig):
        _refuse_vllm_transformers_backend(config)
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = build_projector(config)
        embed_std = 1 / math.sqrt(config.text_config.hidden_size)
        self.image_newline = nn.Parameter(torch.randn(config.text_config.hidden_size, dtype=self.dtype) * embed_std)
        self.vocab_size = config.text_config.vocab_size
        self.language_model = LlavaVRTextModel(config)
        self._saliency_recorder = None
        layers = tower_encoder_layers(self.vision_tower)
        self._tower_hidden_states = TowerHiddenStates(layers)
        if config.vision_remember_layers and config.vision_remember_saliency != "off":
            producing_layer = config.vision_remember_saliency_layer % (len(layers) + 1) - 1
            if producing_layer < 0:
                raise ValueError("vision_remember_saliency_layer must be a hidden state after an encoder layer (>= 1)")
            self._saliency_recorder = SaliencyRecorder(
                producing_layer, config.vision_config.num_attention_heads, config.vision_remember_saliency
            )
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def image_layouts(self, image_sizes, batch_num_images=None, vision_aspect_ratio=None):
        """Per image, its `AnyResLayout` (the processor counts placeholders with the same function)."""
        config = self.config
        use_anyres = images_use_anyres(batch_num_images, len(image_sizes), config.multi_image_anyres)
        return [
            anyres_layout(
                size,
                config.image_grid_pinpoints,
                config.vision_config.image_size,
                config.token_grid_size,
                vision_aspect_ratio or config.vision_aspect_ratio,
                tiled,
            )
            for size, tiled in zip(image_sizes, use_anyres, strict=False)
        ]

    @merge_with_config_defaults
    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        image_sizes: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        vision_aspect_ratio: str | None = None,
        batch_num_images: torch.LongTensor | None = None,
        **kwargs,
    ) -> LlavaVRImageFeaturesOutput:
        r"""
        Encodes the images' tiles, projects and packs them, and gathers what Vision Remember reads.

        pixel_values (`torch.Tensor`): `(num_images, max_tiles, 3, H, W)` padded per image, or `(total_tiles, 3, H, W)`.
        image_sizes (`torch.Tensor` of shape `(num_images, 2)`): original `(height, width)` of each image.
        batch_num_images (`torch.LongTensor`, *optional*): images per sample (LLaVA-OneVision tiles lone images only).
        **kwargs: passed to the vision tower, as in LLaVA-OneVision (`output_attentions`, `output_hidden_states`).

        Returns `LlavaVRImageFeaturesOutput` with `pooler_output` (per image `(tokens_i, hidden_size)`),
        `deepstack_features` (see its docstring), the tower's `last_hidden_state`, its `attentions` when asked for, and
        `hidden_states`: the tower's own tuple when asked for, else the states used (`None` elsewhere).
        """
        config = self.config
        if image_sizes is None or len(image_sizes) == 0:
            raise ValueError("pixel_values were given without image_sizes: pass the processor's `image_sizes` too")
        layouts = self.image_layouts(image_sizes, batch_num_images, vision_aspect_ratio)
        pixel_values = flatten_tiles(pixel_values, layouts, config.vision_config.image_size)
        tiles_per_image = [layout.num_tiles for layout in layouts]
        with_vr = bool(config.vision_remember_layers)
        tower_out, hidden_states, projected, multi_level, saliency = self._encode_tiles(
            pixel_values, vision_feature_layer, vision_feature_select_strategy, with_vr, **kwargs
        )
        tile_tokens = projected.split(tiles_per_image, dim=0)
        packed = [
            pack_tile_tokens(t, layout, self.image_newline) for t, layout in zip(tile_tokens, layouts, strict=False)
        ]

        deepstack = None
        if with_vr:
            device = multi_level.device
            deepstack = VisionRememberFeatures(
                features=list(multi_level.split(tiles_per_image)),
                saliency=list(saliency.split(tiles_per_image)),
                token_cells=[packed_token_cells(layout, device) for layout in layouts],
            )
        return LlavaVRImageFeaturesOutput(
            last_hidden_state=tower_out.last_hidden_state,
            pooler_output=packed,
            hidden_states=tower_out.hidden_states if tower_out.hidden_states is not None else hidden_states,
            attentions=tower_out.attentions,
            deepstack_features=deepstack,
        )

    def _encode_tiles(self, pixel_values, vision_feature_layer, vision_feature_select_strategy, with_vr, **kwargs):
        """Tower + projector on `(tiles, 3, H, W)`; with `with_vr`, also VR's multi-level features and saliency.

        Returns `(tower_output, hidden_states, projected (tiles, g*g, D), multi_level (tiles, G*G, C_ml) | None,
        saliency (tiles, G*G) | None)`."""
        config = self.config
        feature_layers = [vision_feature_layer] if isinstance(vision_feature_layer, int) else list(vision_feature_layer)
        vr_layers = config.vision_remember_feature_layers if with_vr else []
        recorder = self._saliency_recorder if with_vr else None
        with recorder.recording(self.vision_tower) if recorder is not None else contextlib.nullcontext():
            tower_out, hidden_states = self._tower_hidden_states.run(
                self.vision_tower, pixel_values, feature_layers + vr_layers, **kwargs
            )
        selected = torch.cat([hidden_states[i] for i in feature_layers], dim=-1)
        if vision_feature_select_strategy == "default":
            selected = selected[:, 1:]
        projected = self.multi_modal_projector(selected)
        multi_level = saliency = None
        if vr_layers:
            cells = config.patch_grid_size**2
            multi_level = torch.cat([hidden_states[i][:, -cells:] for i in vr_layers], dim=-1)
            if recorder is not None:
                saliency = recorder.pop()[:, -cells:].to(multi_level.dtype)
            else:
                saliency = multi_level.new_ones(multi_level.shape[:2])
        return tower_out, hidden_states, projected, multi_level, saliency

    @merge_with_config_defaults
    @can_return_tuple
    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        video_num_frames: torch.LongTensor | list[int] | None = None,
        **kwargs,
    ) -> LlavaVRImageFeaturesOutput:
        r"""
        Encodes videos as LLaVA-OneVision does: every frame through the tower at the base tile resolution, the
        projector, then bilinear pooling of the frame's token grid by `config.spatial_pool_stride`; the frames' tokens
        in order, then one `image_newline` per video. With Vision Remember on video (`config.vision_remember_video`),
        also gathers what VR reads: each frame is a tile of its video. All frames of all videos go through the tower
        and the pooling in one batch.

        pixel_values_videos (`torch.Tensor`): `(num_videos, frames, 3, H, W)` (the processor's), or the frames of
            videos of different lengths flattened, `(total_frames, 3, H, W)`, with `video_num_frames`.
        video_num_frames (`torch.LongTensor` or `list[int]` of length `num_videos`, *optional*): frames per video of
            a flattened `pixel_values_videos`.
        **kwargs: passed to the vision tower (`output_attentions`, `output_hidden_states`).

        Returns `LlavaVRImageFeaturesOutput` with `pooler_output` (per video `(frames * gv**2 + 1, hidden_size)`,
        `gv = config.video_token_grid_size`) and `deepstack_features` (per video: `(frames, G*G, C_ml)` features,
        `(frames, G*G)` saliency, token cells `(frames, row, col)` with a `-1` row for the newline; `None` without VR
        on video).
        """
        config = self.config
        shape = tuple(pixel_values_videos.shape)
        if pixel_values_videos.dim() == 5 and video_num_frames is None:
            frames_per_video = [shape[1]] * shape[0]
            pixel_values_videos = pixel_values_videos.flatten(0, 1)
        elif pixel_values_videos.dim() == 4 and video_num_frames is not None:
            frames_per_video = [int(n) for n in video_num_frames]
            if sum(frames_per_video) != shape[0]:
                raise ValueError(f"video_num_frames {frames_per_video} do not add up to the {shape[0]} frames given")
        else:
            raise ValueError(
                f"pixel_values_videos of shape {shape}: expected (num_videos, frames, 3, height, width), or "
                "(total_frames, 3, height, width) with video_num_frames"
            )
        tile = config.vision_config.image_size
        if not frames_per_video or min(frames_per_video) < 1:
            raise ValueError(f"pixel_values_videos of shape {shape} hold a video without frames ({frames_per_video})")
        if tuple(pixel_values_videos.shape[1:]) != (3, tile, tile):
            raise ValueError(
                f"video frames are {tuple(pixel_values_videos.shape[1:])}, the tower expects (3, {tile}, {tile})"
            )
        with_vr = bool(config.vision_remember_layers) and config.vision_remember_video
        tower_out, hidden_states, projected, multi_level, saliency = self._encode_tiles(
            pixel_values_videos, vision_feature_layer, vision_feature_select_strategy, with_vr, **kwargs
        )
        pooled = pool_frame_tokens(projected, config.spatial_pool_stride)  # (total_frames, gv*gv, D)
        newline = self.image_newline[None, :].to(pooled)
        packed = [torch.cat((video.flatten(0, 1), newline)) for video in pooled.split(frames_per_video)]

        deepstack = None
        if with_vr:
            grid, device = config.video_token_grid_size, multi_level.device
            deepstack = VisionRememberFeatures(
                features=list(multi_level.split(frames_per_video)),
                saliency=list(saliency.split(frames_per_video)),
                token_cells=[video_token_cells(n, grid, device) for n in frames_per_video],
            )
        return LlavaVRImageFeaturesOutput(
            last_hidden_state=tower_out.last_hidden_state,
            pooler_output=packed,
            hidden_states=tower_out.hidden_states if tower_out.hidden_states is not None else hidden_states,
            attentions=tower_out.attentions,
            deepstack_features=deepstack,
        )

    def _placeholder_mask(self, input_ids, inputs_embeds, token_id: int, num_features: int, what: str, hint: str):
        """`(batch, seq)` bool mask of the tokens `token_id` (found by embedding when only `inputs_embeds` is given);
        raises if their count is not `num_features`."""
        if input_ids is None:
            embedding = self.get_input_embeddings()(
                torch.tensor(token_id, dtype=torch.long, device=inputs_embeds.device)
            )
            mask = (inputs_embeds == embedding).all(-1)
        else:
            mask = input_ids == token_id
        num_tokens = int(mask.sum())
        if num_tokens != num_features:
            raise ValueError(
                f"{what.capitalize()} features and {what} tokens do not match, tokens: {num_tokens}, features: "
                f"{num_features}. The text must hold exactly the {what} tokens the processor expands each <{what}> "
                f"into{hint}; a{'n' if what == 'image' else ''} {what} cut by truncation (raise max_length) or a "
                f"processor built for another projector_type{'' if what == 'image' else ' / spatial_pool_stride'} "
                "gives this."
            )
        return mask

    def get_video_placeholder_mask(self, input_ids, inputs_embeds, video_features: torch.Tensor):
        """`(batch, seq)` bool mask of the `<video>` tokens; raises if their count is not the features' count."""
        hint = " (frames * ceil(g / spatial_pool_stride)**2 + 1)"
        return self._placeholder_mask(
            input_ids, inputs_embeds, self.config.video_token_id, video_features.shape[0], "video", hint
        )

    def get_placeholder_mask(self, input_ids, inputs_embeds, image_features: torch.Tensor):
        """`(batch, seq)` bool mask of the `<image>` tokens; raises if their count is not the features' count."""
        return self._placeholder_mask(
            input_ids, inputs_embeds, self.config.image_token_id, image_features.shape[0], "image", ""
        )

    @staticmethod
    def _is_data_parallel() -> bool:
        distributed = torch.distributed
        return distributed.is_available() and distributed.is_initialized() and distributed.get_world_size() > 1

    def _text_only_vision_pass(self, inputs_embeds):
        """A text-only batch on one rank of a sharded (FSDP / ZeRO-3) run: run tower, projector and VR on one blank
        image anyway, contributing exactly zero, so every rank takes part in the same gathers and reductions. The blank
        image is one tile in size, with as many tiles as this model's own layout gives it (pinpoints,
        `vision_aspect_ratio`: 2 for a 1 x 1 pinpoint, 3 under LLaVA-NeXT's AnyRes-4, 1 without AnyRes)."""
        tile = self.config.vision_config.image_size
        image_sizes = torch.tensor([[tile, tile]], device=inputs_embeds.device)
        num_tiles = self.image_layouts(image_sizes)[0].num_tiles
        blank = inputs_embeds.new_zeros(1, num_tiles, 3, tile, tile, dtype=self.vision_tower.dtype)
        image_output = self.get_image_features(blank, image_sizes)
        # summed in fp32: an fp16 sum of all the blank image's features can pass 65504, and 0 * inf is NaN
        zero = 0.0 * torch.cat(image_output.pooler_output).sum(dtype=torch.float32)
        inputs_embeds = inputs_embeds + zero.to(inputs_embeds.dtype)
        vision_remember_inputs = None
        if self.config.vision_remember_layers:
            image_features = image_output.vision_remember_features
            no_tokens = torch.zeros(inputs_embeds.shape[:2], dtype=torch.bool, device=inputs_embeds.device)
            no_cells = image_features._replace(token_cells=[image_features.token_cells[0][:0]])
            vision_remember_inputs = VisionRemember.prepare_inputs(no_tokens, no_cells, self.config)
        return inputs_embeds, vision_remember_inputs

    @merge_with_config_defaults
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        vision_aspect_ratio: str | None = None,
        batch_num_images: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        mm_encoder_outputs: dict | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        **kwargs,
    ) -> LlavaVRModelOutputWithPast:
        r"""
        image_sizes (`torch.LongTensor` of shape `(num_images, 2)`): original `(height, width)` of each image.
        batch_num_images (`torch.LongTensor`, *optional*): images per sample.
        mm_encoder_outputs (`dict`, *optional*): `{"image": ..., "video": ...}` (`LlavaVRImageFeaturesOutput`s)
            pre-encoded by `generate()`.
        pixel_values_videos (`torch.Tensor` of shape `(num_videos, frames, 3, H, W)`, *optional*): video frames.
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if pixel_values is not None and mm_encoder_outputs is not None and mm_encoder_outputs.get("image") is not None:
            raise ValueError("You cannot specify both pixel_values and mm_encoder_outputs at the same time")
        if pixel_values_videos is not None and (mm_encoder_outputs or {}).get("video") is not None:
            raise ValueError("You cannot specify both pixel_values_videos and mm_encoder_outputs at the same time")
        past_key_values = take_cache(past_key_values, kwargs)  # the cache's name: compat_llava_vr.py
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        image_output = (mm_encoder_outputs or {}).get("image")
        if image_output is None and pixel_values is not None:
            image_output = self.get_image_features(
                pixel_values,
                image_sizes,
                vision_feature_layer=vision_feature_layer,
                vision_feature_select_strategy=vision_feature_select_strategy,
                vision_aspect_ratio=vision_aspect_ratio,
                batch_num_images=batch_num_images,
            )

        video_output = (mm_encoder_outputs or {}).get("video")
        if video_output is None and pixel_values_videos is not None:
            video_output = self.get_video_features(
                pixel_values_videos,
                vision_feature_layer=vision_feature_layer,
                vision_feature_select_strategy=vision_feature_select_strategy,
            )
        video_vr_inputs = None
        if video_output is not None:
            video_features = torch.cat(list(video_output.pooler_output), dim=0)
            video_features = video_features.to(inputs_embeds.device, inputs_embeds.dtype)
            video_mask = self.get_video_placeholder_mask(input_ids, inputs_embeds, video_features)
            inputs_embeds = inputs_embeds.masked_scatter(video_mask[..., None], video_features)
            if self.config.vision_remember_layers and self.config.vision_remember_video:
                if video_output.vision_remember_features is None:
                    raise ValueError("the video features carry no Vision Remember inputs (deepstack_features)")
                video_vr_inputs = video_vision_remember_inputs(
                    video_mask, video_output.vision_remember_features, self.config
                )
        elif (
            not is_torchdynamo_compiling()
            and input_ids is not None
            and (past_key_values is None or past_key_values.get_seq_length() == 0)
            and self.config.video_token_id != self.config.image_token_id
            and (input_ids == self.config.video_token_id).any()
        ):
            raise ValueError(
                "input_ids contain video tokens but no pixel_values_videos (or pre-encoded video features) were given"
            )

        image_features = vision_remember_inputs = None
        if image_output is not None:
            image_features = torch.cat(list(image_output.pooler_output), dim=0)
            image_features = image_features.to(inputs_embeds.device, inputs_embeds.dtype)
            image_mask = self.get_placeholder_mask(input_ids, inputs_embeds, image_features)
            inputs_embeds = inputs_embeds.masked_scatter(image_mask[..., None], image_features)
            if self.config.vision_remember_layers:
                if image_output.vision_remember_features is None:
                    raise ValueError("the image features carry no Vision Remember inputs (deepstack_features)")
                vision_remember_inputs = VisionRemember.prepare_inputs(
                    image_mask, image_output.vision_remember_features, self.config
                )
        elif (
            not is_torchdynamo_compiling()  # a compiled decode step (static cache) never holds images
            and input_ids is not None
            and (past_key_values is None or past_key_values.get_seq_length() == 0)
            and (input_ids == self.config.image_token_id).any()
        ):
            raise ValueError(
                "input_ids contain image tokens but no pixel_values (or pre-encoded image features) were given"
            )
        elif self.training and video_output is None and self._is_data_parallel():
            inputs_embeds, vision_remember_inputs = self._text_only_vision_pass(inputs_embeds)
        if video_vr_inputs is not None:
            vision_remember_inputs = (
                video_vr_inputs if vision_remember_inputs is None else (vision_remember_inputs, video_vr_inputs)
            )

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            vision_remember_inputs=vision_remember_inputs,
            **kwargs,
        )
        return LlavaVRModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            **{OUTPUT_CACHE: getattr(outputs, OUTPUT_CACHE)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_features,
        )


class LlavaVRForConditionalGeneration(LlavaVRPreTrainedModel, LlavaVRGenerationMixin):
    _auto_class = "AutoModelForImageTextToText"
    _default_unquantized_modules = ("model.multi_modal_projector", "model.language_model.vision_remember", "lm_head")
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: LlavaVRConfig):
        super().__init__(config)
        self.model = LlavaVRModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_image_features(self, pixel_values, image_sizes, **kwargs) -> LlavaVRImageFeaturesOutput:
        return self.model.get_image_features(pixel_values=pixel_values, image_sizes=image_sizes, **kwargs)

    def get_video_features(self, pixel_values_videos, **kwargs) -> LlavaVRImageFeaturesOutput:
        return self.model.get_video_features(pixel_values_videos=pixel_values_videos, **kwargs)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        vision_aspect_ratio: str | None = None,
        batch_num_images: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        **kwargs,
    ) -> LlavaVRCausalLMOutputWithPast:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Next-token labels, `-100` where no loss is taken.
        pixel_values_videos (`torch.Tensor` of shape `(num_videos, frames, 3, H, W)`, *optional*): video frames.
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            image_sizes=image_sizes,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            vision_aspect_ratio=vision_aspect_ratio,
            batch_num_images=batch_num_images,
            use_cache=use_cache,
            mm_encoder_outputs=mm_encoder_outputs,
            pixel_values_videos=pixel_values_videos,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return LlavaVRCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{OUTPUT_CACHE: getattr(outputs, OUTPUT_CACHE)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
        )


__all__ = [
    "LlavaVRForConditionalGeneration",
    "LlavaVRModel",
    "LlavaVRPreTrainedModel",
    "LlavaVRTextModel",
    "LlavaVRImageFeaturesOutput",
]
