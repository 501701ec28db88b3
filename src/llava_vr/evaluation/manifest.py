# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""What the `lmms_eval.models` entry point hands lmms-eval 0.7 (`registry_v2.load_entrypoint_manifests`): the model
names `llava_vr` (Transformers back end) and `llava_vr_vllm` (vLLM back end). Imports neither torch nor the classes;
lmms-eval imports a class when `--model` names it."""

from lmms_eval.models.registry_v2 import ModelManifest

MANIFESTS = [
    ModelManifest(model_id="llava_vr", simple_class_path="llava_vr.evaluation.lmms_model.LlavaVRLmms"),
    ModelManifest(model_id="llava_vr_vllm", simple_class_path="llava_vr.evaluation.lmms_model.LlavaVRVLLMLmms"),
]

__all__ = ["MANIFESTS"]
