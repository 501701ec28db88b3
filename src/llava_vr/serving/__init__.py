# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Serving LLaVA-VR with vLLM (`pip install -e ".[serve]"`).

The package registers a vLLM model for the architecture `LlavaVRForConditionalGeneration` through the
`vllm.general_plugins` entry point (`llava_vr.serving.vllm_plugin:register`), so `vllm.LLM(model=...)` and
`python -m vllm.entrypoints.openai.api_server --model ...` serve a LLaVA-VR checkpoint with Vision Remember running
inside vLLM's decoder. vLLM is imported only by the `vllm_*` modules of this subpackage. LoRA adapters:
`lora_adapters.py` (which modules vLLM may adapt; `python -m llava_vr.serving.lora_adapters split|check`).
"""
