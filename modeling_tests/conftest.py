"""Shared fixtures; the tiny builders themselves live in `llava_vr.testing_utils`."""

import pytest

from llava_vr.testing_utils import tiny_model


@pytest.fixture
def model():
    """A tiny random CLIP + Qwen2 model with VR moved off its identity start."""
    return tiny_model(perturb_vr=True)
