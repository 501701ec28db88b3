"""A saved LLaVA-VR folder is self-contained: Auto classes, generate() and pipeline("image-text-to-text") work with
trust_remote_code=True in a fresh process where the `llava_vr` package cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap

from llava_vr.testing_utils import processor_and_model

REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["llava_vr"] = None  # the package must not be importable
    import numpy as np, torch
    from PIL import Image
    from transformers import (AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor, pipeline)

    folder = sys.argv[1]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    base = AutoModel.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 100, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image", "image": picture}, {"type": "text", "text": "Total?"}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    pipe = pipeline("image-text-to-text", model=folder, trust_remote_code=True)
    answer = pipe(text=messages, max_new_tokens=4, do_sample=False, return_full_text=False)
    print(json.dumps({
        "config": type(config).__module__, "base": type(base).__name__, "model": type(model).__name__,
        "processor": type(processor).__name__, "generated": generated[0, inputs["input_ids"].shape[1]:].tolist(),
        "pipeline": answer[0]["generated_text"],
        "modules": [m for m, v in sys.modules.items() if m.startswith("llava_vr") and v is not None],
    }))
    """
)


def test_saved_folder_loads_generates_and_pipelines_without_the_package(tmp_path):
    processor, model = processor_and_model(projector_type="adaptive_avg_pool")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "modeling_llava_vr.py",
        "configuration_llava_vr.py",
        "processing_llava_vr.py",
        "packing_llava_vr.py",
    } <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert {"AutoConfig", "AutoModel", "AutoModelForImageTextToText"} <= auto_map.keys()
    assert json.loads((tmp_path / "processor_config.json").read_text())["auto_map"]["AutoProcessor"]

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["config"].startswith("transformers_modules") and report["modules"] == []
    assert (report["base"], report["model"], report["processor"]) == (
        "LlavaVRModel",
        "LlavaVRForConditionalGeneration",
        "LlavaVRProcessor",
    )

    picture_inputs = processor.apply_chat_template(
        [
            {
                "role": "user",
                "content": [{"type": "image", "image": _same_picture()}, {"type": "text", "text": "Total?"}],
            }
        ],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    expected = model.generate(**picture_inputs, max_new_tokens=4, do_sample=False)
    assert report["generated"] == expected[0, picture_inputs["input_ids"].shape[1] :].tolist()
    assert report["pipeline"] == processor.decode(
        expected[0, picture_inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )


def _same_picture():
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 100, 3), dtype=np.uint8))
