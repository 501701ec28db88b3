"""What the converter takes from its inputs and how it refuses them (issue 16 items 2, 6, 8; issue 13 item 2):
the source's image processor from whichever file holds it (never a guessed normalisation), every Vision Remember
flag in config.json, readable output folders, and messages for an already-converted folder, a missing path and an
offline Hub. Tiny random sources; never the network (a closed or silent port on 127.0.0.1 at most)."""

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_conversion import VR_FLAGS, convert, next_model, onevision_model, subprocess_env, write_transformers_source
from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, LlavaNextProcessor

from llava_vr.conversion import convert as conversion
from llava_vr.data.image_processors import anyres_image_processor

HALF = [0.5, 0.5, 0.5]
# the source's normalisation: mean/std 0.5 for the LLaVA-NeXT (CLIP) source, where the old fallback used CLIP's; for
# the OneVision (SigLIP) source, values matching no tower's, where the old fallback's 0.5 would have matched
NORMALISATION = {"llava_next": (HALF, HALF), "llava_onevision": ([0.45, 0.4, 0.35], [0.3, 0.25, 0.2])}
IMAGE_SIZES = [(60, 100), (120, 40), (56, 56)]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def plain_sources(tmp_path_factory):
    """A tiny LLaVA-NeXT (current layout) and OneVision (llava-hf layout) source, from `write_transformers_source`."""
    root = tmp_path_factory.mktemp("plain")
    return {
        "next": write_transformers_source(next_model(), root / "next", "transformers"),
        "onevision": write_transformers_source(onevision_model(), root / "onevision", "llava-hf"),
    }


def with_image_processor(source: Path, folder: Path, layout: str) -> Path:
    """A copy of `source` whose image processor normalises with `NORMALISATION`, saved by the installed Transformers
    as `preprocessor_config.json` (the image processor alone) or inside `processor_config.json` (the whole
    processor, Transformers 5's layout); `none`: no image processor at all."""
    shutil.copytree(source, folder)
    (folder / "preprocessor_config.json").unlink()
    if layout == "none":
        return folder
    config = json.loads((folder / "config.json").read_text())
    onevision = config["model_type"] == "llava_onevision"
    tile = config["vision_config"]["image_size"]
    mean, std = NORMALISATION[config["model_type"]]
    image_processor = anyres_image_processor(
        "onevision" if onevision else "next", tile, config["image_grid_pinpoints"], image_mean=mean, image_std=std
    )
    if layout == "preprocessor_config.json":
        image_processor.save_pretrained(folder)
    else:
        # LlavaOnevisionProcessor needs a video processor (torchvision): the OneVision image processor goes into a
        # LlavaNextProcessor, saved the same way (`processor_config.json` with an `image_processor` entry)
        processor = LlavaNextProcessor(
            image_processor=image_processor,
            tokenizer=AutoTokenizer.from_pretrained(folder),
            image_token="<image>",
            vision_feature_select_strategy="default",
        )
        processor.save_pretrained(folder)
        assert not (folder / "preprocessor_config.json").exists()
        assert "image_processor" in json.loads((folder / "processor_config.json").read_text())
    return folder


def pictures():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in IMAGE_SIZES]


def converted_pixels(folder: Path) -> torch.Tensor:
    processor = AutoProcessor.from_pretrained(folder)
    return processor.image_processor(pictures(), return_tensors="pt")["pixel_values"]


# ---------------------------------------------------------------------------------------------------------------------
# Item 2: the source's image processor, from either file; refused when there is none
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["next", "onevision"])
@pytest.mark.parametrize("layout", ["preprocessor_config.json", "processor_config.json"])
def test_converted_pixel_values_equal_the_sources_whichever_file_holds_its_image_processor(
    plain_sources, tmp_path, kind, layout
):
    source = with_image_processor(plain_sources[kind], tmp_path / "source", layout)
    expected = AutoImageProcessor.from_pretrained(source)(pictures(), return_tensors="pt")["pixel_values"]
    convert(source, tmp_path / "out", "--projector-type", "mlp", *VR_FLAGS)
    got = converted_pixels(tmp_path / "out")
    model_type = "llava_next" if kind == "next" else "llava_onevision"
    image_processor = AutoProcessor.from_pretrained(tmp_path / "out").image_processor
    assert list(image_processor.image_mean) == NORMALISATION[model_type][0]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_source_without_image_processor_is_refused_naming_the_fix(plain_sources, tmp_path, capsys):
    source = with_image_processor(plain_sources["next"], tmp_path / "source", "none")
    capsys.readouterr()
    code = conversion.main(["--source", str(source), "--output", str(tmp_path / "out"), *VR_FLAGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "has no image processor" in err[0] and "normalisation the model was trained with is unknown" in err[0]
    assert "--image-mean" in err[0] and "--assume-clip-normalisation" in err[0]
    assert not (tmp_path / "out").exists()


def test_an_explicit_normalisation_converts_a_source_without_image_processor(plain_sources, tmp_path):
    source = with_image_processor(plain_sources["onevision"], tmp_path / "source", "none")
    mean, std = NORMALISATION["llava_onevision"]
    convert(source, tmp_path / "half", *VR_FLAGS, "--image-mean", *map(str, mean), "--image-std", *map(str, std))
    reference = with_image_processor(plain_sources["onevision"], tmp_path / "reference", "preprocessor_config.json")
    expected = AutoImageProcessor.from_pretrained(reference)(pictures(), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(converted_pixels(tmp_path / "half"), expected, rtol=0, atol=0)
    convert(source, tmp_path / "clip", *VR_FLAGS, "--assume-clip-normalisation")
    clip = AutoProcessor.from_pretrained(tmp_path / "clip").image_processor
    assert [round(m, 4) for m in clip.image_mean] == [0.4815, 0.4578, 0.4082]
    assert "LlavaOnevision" in type(clip).__name__  # the source's kind of AnyRes processor, CLIP's normalisation
    assert "CLIP mean/std (--assume-clip-normalisation)" in (tmp_path / "clip" / "README.md").read_text()


# ---------------------------------------------------------------------------------------------------------------------
# Issue 13 item 2: every Vision Remember setting as a flag; unset flags keep the config's own default
# ---------------------------------------------------------------------------------------------------------------------
VR_SETTINGS = {  # flag -> (argument, config.json field, value)
    "--vision-remember-hidden-size": ("48", "vision_remember_hidden_size", 48),
    "--vision-remember-num-heads": ("3", "vision_remember_num_heads", 3),
    "--vision-remember-window-size": ("4", "vision_remember_window_size", 4),
    "--vision-remember-saliency": ("mean_token", "vision_remember_saliency", "mean_token"),
    "--no-vision-remember-self-attention": (None, "vision_remember_self_attention", False),
}


def test_every_vision_remember_flag_lands_in_config_json_and_unset_ones_keep_the_configs_default(
    plain_sources, tmp_path
):
    from llava_vr import LlavaVRConfig

    flags = [
        item for flag, (value, _, _) in VR_SETTINGS.items() for item in ([flag] if value is None else [flag, value])
    ]
    convert(plain_sources["next"], tmp_path / "set", *VR_FLAGS, *flags)
    config = json.loads((tmp_path / "set" / "config.json").read_text())
    for flag, (_, field, value) in VR_SETTINGS.items():
        assert config[field] == value, flag
    convert(plain_sources["next"], tmp_path / "unset", *VR_FLAGS)
    config = json.loads((tmp_path / "unset" / "config.json").read_text())
    fields = [field for _, field, _ in VR_SETTINGS.values()]
    saved = ("auto_map", "architectures")
    own = LlavaVRConfig(**{k: v for k, v in config.items() if k not in fields and k not in saved})
    for field in fields:
        assert config.get(field) == getattr(own, field), field


def test_saliency_flag_choices_come_from_the_registry():
    from llava_vr.conversion import build_parser
    from llava_vr.registries_llava_vr import SALIENCY_MODES

    action = next(a for a in build_parser()._actions if a.dest == "vision_remember_saliency")
    assert list(action.choices) == list(SALIENCY_MODES)


# ---------------------------------------------------------------------------------------------------------------------
# Item 6: the output folder is readable like any save_pretrained output
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_converted_folder_permissions_follow_the_umask(plain_sources, tmp_path, umask, folder_mode, file_mode):
    previous = os.umask(umask)
    try:
        convert(plain_sources["next"], tmp_path / "out", "--no-vision-remember", "--projector-type", "mlp")
    finally:
        os.umask(previous)
    output = tmp_path / "out"
    assert stat.S_IMODE(output.stat().st_mode) == folder_mode
    for path in output.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == file_mode, path.name


# ---------------------------------------------------------------------------------------------------------------------
# Item 8: messages that name the real problem
# ---------------------------------------------------------------------------------------------------------------------
def refusal(tmp_path, capsys, source, *flags) -> str:
    capsys.readouterr()
    code = conversion.main(["--source", str(source), "--output", str(tmp_path / "refused-out"), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not (tmp_path / "refused-out").exists()
    return err[0]


def test_an_already_converted_folder_is_named_as_such(plain_sources, tmp_path, capsys):
    convert(plain_sources["next"], tmp_path / "converted", "--no-vision-remember")
    message = refusal(tmp_path, capsys, tmp_path / "converted")
    assert "is already a LLaVA-VR checkpoint" in message and "llava-vr push" in message
    assert "LLaVA-NeXT-repo" not in message


@pytest.mark.parametrize("missing", ["tiny-models/next_hf-", "./tiny/next", "no-such-folder", "a/b/c"])
def test_a_missing_local_path_says_it_does_not_exist(tmp_path, capsys, monkeypatch, missing):
    monkeypatch.chdir(tmp_path)
    message = refusal(tmp_path, capsys, missing)
    assert f"--source {missing}: no such folder" in message and "does not exist" in message
    assert "Repo id" not in message


def test_an_offline_hub_id_fails_at_once_naming_the_cache_and_the_fix(tmp_path, capsys, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    def no_network(*args, **kwargs):
        raise AssertionError("offline: the Hub must not be contacted")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", no_network)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    message = refusal(tmp_path, capsys, "someone/some-llava")
    assert time.monotonic() - started < 5
    assert "no such local folder" in message and "HF_HUB_OFFLINE is set" in message
    assert "not in the Hub cache" in message and "unset HF_HUB_OFFLINE" in message


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SilentServer:
    """Accepts connections on 127.0.0.1 and never answers (a Hub behind a black-holing network)."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.port = self.socket.getsockname()[1]
        self.connections = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.connections.append(self.socket.accept()[0])
            except OSError:
                return

    def close(self):
        self.socket.close()
        for connection in self.connections:
            connection.close()


def test_a_hub_refusing_connections_fails_at_once(tmp_path, capsys, monkeypatch):
    """In-process: the Hub endpoint on a closed port of 127.0.0.1."""
    from huggingface_hub import constants

    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    message = refusal(tmp_path, capsys, "someone/some-llava")
    assert time.monotonic() - started < 5
    assert "no such local folder" in message and f"the Hub ({endpoint}) cannot be reached" in message
    assert "hf download someone/some-llava --local-dir DIR" in message


def test_a_silent_hub_fails_within_its_timeout_without_retries(tmp_path):
    """The CLI in a subprocess, the Hub endpoint (HF_ENDPOINT) on a port that accepts and never answers, with a
    1-s HF_HUB_ETAG_TIMEOUT: one look-up, no retries, one line."""
    server = SilentServer()
    env = subprocess_env(
        HF_ENDPOINT=f"http://127.0.0.1:{server.port}",
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_ETAG_TIMEOUT="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )
    script = (
        "import sys, time; from llava_vr.conversion.convert import main; started = time.monotonic(); "
        "code = main(sys.argv[1:]); print(f'seconds {time.monotonic() - started:.2f}'); sys.exit(code)"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script, "--source", "someone/some-llava", "--output", str(tmp_path / "out")],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
    finally:
        server.close()
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]  # not other packages' notices
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and "no such local folder" in lines[0] and "Traceback" not in result.stderr, lines
    assert f"the Hub (http://127.0.0.1:{server.port}) cannot be reached" in lines[0] and "Timeout" in lines[0]
    assert float(result.stdout.split("seconds ")[-1]) < 5  # one 1-s look-up, not minutes of retries
