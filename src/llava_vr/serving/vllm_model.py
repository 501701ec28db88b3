# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""LLaVA-VR as a vLLM model: the package's image encoder and `VisionRemember`, vLLM's Qwen2 decoder layers.

The shape of vLLM's Qwen3-VL DeepStack:
- `embed_multimodal` runs the package's `LlavaVRModel.get_image_features` (tower, saliency, projector, AnyRes
  packing) or `get_video_features` (LLaVA-OneVision's frames: tower, projector, per-frame pooling, one newline) and
  returns per image / video one row per placeholder token: the token embedding plus what Vision Remember reads
  (header, multi-level features, saliency; `image_rows.py`). vLLM's encoder cache keeps it per item.
- `embed_input_ids` scatters the embeddings by `is_multimodal` and rebuilds the package's `VisionRememberInputs` for
  the step from the rows it was handed: one for the images, one for the videos (each frame read as its own tile, as
  the Transformers model reads it). Rows that are only part of an item raise (the scheduler settings the model
  enforces keep every image and video whole in one step, see `vllm_config_hook.py`).
- `forward` runs vLLM's Qwen2 layers and, before each VR layer, the package's `VisionRemember` on the image and video
  rows.
  vLLM fuses the residual add into the next layer's norm, so `hidden + residual` is rebuilt first. A step without
  image rows (decode steps, text-only prefills) carries no VR inputs: VR is skipped by construction.
"""

from collections.abc import Iterable
from dataclasses import dataclass, fields

import torch
from torch import nn
from vllm.compilation.decorators import ignore_torch_compile
from vllm.config import VllmConfig
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead
from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsLoRA, SupportsMultiModal
from vllm.model_executor.models.module_mapping import MultiModelKeys
from vllm.model_executor.models.qwen2 import Qwen2Model
from vllm.model_executor.models.utils import AutoWeightsLoader, WeightsMapper, _merge_multimodal_embeddings
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.sequence import IntermediateTensors

from ..modeling_llava_vr import video_vision_remember_inputs
from ..vision_remember_llava_vr import VisionRemember, VisionRememberFeatures, VisionRememberInputs
from .image_encoder import build_image_encoder, encode_images, encode_videos
from .image_rows import decode_image_rows, describe_rows, rows_are_video
from .lora_adapters import check_lora_tensor_name
from .token_counts import supports_video
from .vllm_processing import LlavaVRDummyInputsBuilder, LlavaVRMultiModalProcessor, LlavaVRProcessingInfo


@ignore_torch_compile  # VR's image-dependent shapes stay out of compiled graphs / CUDA graph capture
class LlavaVRQwen2Model(Qwen2Model):
    """vLLM's Qwen2 decoder with the package's `VisionRemember` before the configured layers."""

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        vision_remember: nn.ModuleDict | None = None,
        vision_remember_inputs: tuple[VisionRememberInputs, ...] = (),
    ) -> torch.Tensor:
        if intermediate_tensors is not None:
            raise ValueError("LLaVA-VR does not support pipeline parallelism")
        hidden_states = inputs_embeds if inputs_embeds is not None else self.embed_input_ids(input_ids)
        residual = None
        for index, layer in enumerate(self.layers):
            if vision_remember_inputs and str(index) in vision_remember:
                if residual is not None:  # the stream entering this layer, as Transformers' layer loop has it
                    hidden_states, residual = hidden_states + residual, None
                for inputs in vision_remember_inputs:  # images', videos': disjoint rows, as in Transformers
                    hidden_states = vision_remember[str(index)](hidden_states[None], inputs)[0]
            hidden_states, residual = layer(positions, hidden_states, residual)
        hidden_states, _ = self.norm(hidden_states, residual)
        return hidden_states


@dataclass
class _LoRANameMapper(WeightsMapper):
    """The checkpoint-name renames, for vLLM's LoRA loader: refuses a LoRA weight on a module vLLM cannot adapt
    here (vLLM would otherwise accept any adapter whose module *suffixes* exist, e.g. VR's `q_proj`, and ignore it)."""

    def map_name(self, key: str) -> str | None:
        check_lora_tensor_name(key)
        return super().map_name(key)


@dataclass
class LlavaVRWeightsMapper(WeightsMapper):
    def get_rename_mapper(self) -> WeightsMapper:
        renames = super().get_rename_mapper()
        return _LoRANameMapper(**{f.name: getattr(renames, f.name) for f in fields(renames)})


@MULTIMODAL_REGISTRY.register_processor(
    LlavaVRMultiModalProcessor, info=LlavaVRProcessingInfo, dummy_inputs=LlavaVRDummyInputsBuilder
)
class LlavaVRForConditionalGeneration(nn.Module, SupportsMultiModal, SupportsLoRA):
    """vLLM model for the architecture `LlavaVRForConditionalGeneration` (a LLaVA-VR checkpoint as saved by
    Transformers: `model.vision_tower`, `model.multi_modal_projector`, `model.image_newline`,
    `model.language_model` with its `vision_remember` modules, `lm_head`).

    LoRA (`enable_lora=True`): vLLM adapts the decoder layers' linear layers per request; an adapter on any other
    module is refused when it loads (`lora_adapters.py`)."""

    packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
    embedding_modules = {}

    hf_to_vllm_mapper = LlavaVRWeightsMapper(
        orig_to_new_prefix={
            "model.language_model.vision_remember.": "vision_remember.",
            "model.language_model.": "language_model.",
            "model.vision_tower.vision_model.": "image_encoder.vision_tower.",  # towers saved before Transformers 5
            "model.": "image_encoder.",
        }
    )

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return "<image>"
        if modality.startswith("video"):
            return "<video>"
        raise ValueError("LLaVA-VR accepts images and videos only")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.config = config
        self.hidden_size = config.text_config.hidden_size
        self.cells_per_tile = config.patch_grid_size**2
        self.feature_channels = config.vision_remember_feature_size
        with self._mark_tower_model(vllm_config, {"image", "video"}):
            self.image_encoder, self.vision_remember = build_image_encoder(
                config, vllm_config.device_config.device, vllm_config.model_config.dtype
            )
        with self._mark_language_model(vllm_config):
            text_config = vllm_config.with_hf_config(config.text_config, architectures=["Qwen2ForCausalLM"])
            self.language_model = LlavaVRQwen2Model(vllm_config=text_config, prefix="language_model")
        self.lm_head = ParallelLMHead(config.text_config.vocab_size, self.hidden_size, prefix="lm_head")
        if config.tie_word_embeddings:
            self.lm_head = self.lm_head.tie_weights(self.language_model.embed_tokens)
        self.logits_processor = LogitsProcessor(config.text_config.vocab_size)
        mm_token_ids = [config.image_token_id] + [config.video_token_id] * supports_video(config)
        self.configure_mm_token_handling(config.text_config.vocab_size, mm_token_ids)
        self._step_vision_remember_inputs: tuple[VisionRememberInputs, ...] = ()

    def get_language_model(self) -> nn.Module:
        return self.language_model

    def get_mm_mapping(self) -> MultiModelKeys:
        """LoRA wrappers go on the language model only (tower, projector and VR are the package's modules)."""
        return MultiModelKeys.from_string_field(
            language_model="language_model",
            connector="image_encoder.multi_modal_projector",
            tower_model="image_encoder.vision_tower",
        )

    def embed_multimodal(
        self,
        pixel_values=None,
        image_sizes=None,
        image_num_tiles=None,
        pixel_values_videos=None,
        video_num_frames=None,
        **kwargs,
    ) -> MultiModalEmbeddings:
        """Per image / video `(tokens_i, D + header + payload_i)` rows (see `image_rows.py`). vLLM calls it with one
        modality at a time."""
        dtype = self.image_encoder.vision_tower.dtype
        rows = []
        if pixel_values is not None:
            rows += encode_images(
                self.image_encoder,
                _flat(pixel_values).to(dtype),
                torch.as_tensor(image_sizes).reshape(-1, 2),
                torch.as_tensor(image_num_tiles).reshape(-1),
            )
        if pixel_values_videos is not None:
            frames = torch.as_tensor(video_num_frames).reshape(-1)
            rows += encode_videos(self.image_encoder, _flat(pixel_values_videos).to(dtype), frames)
        return rows

    def embed_input_ids(
        self,
        input_ids: torch.Tensor,
        multimodal_embeddings: MultiModalEmbeddings | None = None,
        *,
        is_multimodal: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self._step_vision_remember_inputs = ()
        inputs_embeds = self._embed_text_input_ids(
            input_ids, self.language_model.embed_input_ids, is_multimodal=is_multimodal
        )
        if multimodal_embeddings is None or len(multimodal_embeddings) == 0:
            return inputs_embeds
        if is_multimodal is None:
            raise ValueError("image / video embeddings were given without the is_multimodal mask")
        embeddings, vr_inputs = self._unpack_step_rows(list(multimodal_embeddings), is_multimodal)
        self._step_vision_remember_inputs = vr_inputs
        return _merge_multimodal_embeddings(inputs_embeds, embeddings, is_multimodal)

    def _unpack_step_rows(self, slices: list[torch.Tensor], is_multimodal: torch.Tensor):
        """The step's image and video rows -> (token embeddings, the images' and the videos' `VisionRememberInputs`,
        each present when VR reads them)."""
        decoded = [decode_image_rows(s, self.hidden_size, self.cells_per_tile, self.feature_channels) for s in slices]
        embeddings = [d[0] for d in decoded]
        if not self.config.vision_remember_layers:
            return embeddings, ()
        partial = [i for i, d in enumerate(decoded) if not d[4]]
        if partial:
            raise ValueError(
                f"a decoder step holds only {describe_rows(slices[partial[0]], self.hidden_size)} image or video "
                "tokens: Vision Remember needs all of an image's tokens in one step (all of a video's for a video). "
                "LLaVA-VR sets disable_chunked_mm_input=True and a scheduler that never ends a prefix-cache hit "
                "inside an image or a video; something overrode them"
            )
        video = [rows_are_video(s, self.hidden_size) for s in slices]
        # the step's multimodal rows in the flattened batch are the slices' rows, in order
        device = slices[0].device
        positions = is_multimodal.to(device).nonzero().squeeze(1)
        item_of_row = torch.repeat_interleave(
            torch.arange(len(slices), device=device), torch.tensor([s.shape[0] for s in slices], device=device)
        )
        vr_inputs = []
        for is_video, build in ((False, VisionRemember.prepare_inputs), (True, video_vision_remember_inputs)):
            chosen = [i for i, d in enumerate(decoded) if video[i] == is_video and d[2] is not None]
            if not chosen:
                continue
            mask = torch.zeros(is_multimodal.shape, dtype=torch.bool, device=device)
            mask[positions[torch.isin(item_of_row, torch.tensor(chosen, device=device))]] = True
            features = VisionRememberFeatures(
                features=[decoded[i][2] for i in chosen],
                saliency=[decoded[i][3] for i in chosen],
                token_cells=[decoded[i][1] for i in chosen],
            )
            vr_inputs.append(build(mask[None], features, self.config))
        return embeddings, tuple(vr_inputs)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        vr_inputs, self._step_vision_remember_inputs = self._step_vision_remember_inputs, ()
        if inputs_embeds is None:
            vr_inputs = ()  # token ids only: nothing was scattered this step
        return self.language_model(
            input_ids, positions, intermediate_tensors, inputs_embeds, self.vision_remember, vr_inputs
        )

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.logits_processor(self.lm_head, hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)


def _flat(values) -> torch.Tensor:
    """vLLM's flat field: one tensor, or a list of per-item tensors to concatenate."""
    return torch.cat(list(values)) if isinstance(values, (list, tuple)) else values


__all__ = ["LlavaVRForConditionalGeneration", "LlavaVRQwen2Model"]
