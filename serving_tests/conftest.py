# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""vLLM serving tests (CPU). Run in the serving environment: `python -m pytest serving_tests`.

vLLM engines run in the test process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), the OpenAI-compatible server in a
subprocess. The environment below is what any CPU run of vLLM needs; nothing in it is specific to LLaVA-VR.
"""

import pytest
from serving_utils import set_cpu_env

set_cpu_env()


@pytest.fixture
def vision_remember_steps(monkeypatch):
    """Per decoder step that ran Vision Remember in this process, the number of images it covered."""
    from llava_vr.vision_remember_llava_vr import VisionRememberInputs

    steps, build = [], VisionRememberInputs.build

    def counting_build(vision_mask, image_features, *args, **kwargs):
        steps.append(len(image_features.features))
        return build(vision_mask, image_features, *args, **kwargs)

    monkeypatch.setattr(VisionRememberInputs, "build", staticmethod(counting_build))
    return steps
