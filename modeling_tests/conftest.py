"""Shared fixtures; the tiny builders themselves live in `llava_vr.testing_utils`."""

import pytest
import torch

from llava_vr.testing_utils import tiny_model


@pytest.fixture
def model():
    """A tiny random CLIP + Qwen2 model with VR moved off its identity start."""
    return tiny_model(perturb_vr=True)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests (`pytestmark = pytest.mark.usefixtures("one_thread")`): tiny models
    gain nothing from more, and on a busy machine OpenMP's spinning costs seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
