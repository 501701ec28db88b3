"""A saved model folder is readable like any file the user writes: safetensors' owner-only weights get the umask's
permissions."""

import os
import stat

from llava_vr.testing_utils import tiny_model


def test_saved_weights_get_the_umasks_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        tiny_model().save_pretrained(tmp_path)
    finally:
        os.umask(previous)
    weights = list(tmp_path.glob("*.safetensors"))
    assert weights and all(stat.S_IMODE(w.stat().st_mode) == 0o644 for w in weights)
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o644
