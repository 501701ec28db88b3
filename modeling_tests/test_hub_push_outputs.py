"""`llava-vr push` of real-life folders (issue 16 items 3, 4, 5): a training run's output folder (checkpoints, logs,
Trainer state, TRL's card), a converted folder pushed with `--repo-id`, pickles, a LoRA adapter, an unconverted
checkpoint. Uploads are captured in-process (`create_repo` / `create_commit` replaced); never the network."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from test_conversion import convert, next_model, write_transformers_source

from llava_vr.hub import push as publishing

TRL_CARD = """---
base_model: {base}
library_name: transformers
model_name: sft-out
tags:
- generated_from_trainer
- sft
- trl
licence: license
---

# Model Card for sft-out

This model is a fine-tuned version of [{base}](https://huggingface.co/{base}).
"""
TRAINING_STATE = ["optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin"]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A tiny converted folder whose source sits in a Hub-cache-like path (`models--OWNER--NAME/snapshots/SHA`), so
    the conversion records the source's Hub id; and the source itself."""
    root = tmp_path_factory.mktemp("push")
    source = write_transformers_source(
        next_model(), root / "hub" / "models--tiny-org--tiny-next" / "snapshots" / "a1b2", "transformers"
    )
    convert(source, root / "converted", "--projector-type", "mlp", "--no-vision-remember")
    return {"folder": root / "converted", "source": source}


def training_output(converted: Path, folder: Path, base: str | None) -> Path:
    """What `llava-vr sft` leaves: the model's files, TRL's card, `training_args.bin`, `checkpoint-N/` with the
    Trainer's state, TensorBoard `runs/`."""
    shutil.copytree(converted, folder)
    (folder / "README.md").write_text(
        TRL_CARD.format(base=base) if base else TRL_CARD.replace("base_model: {base}\n", "").replace("{base}", "None")
    )
    (folder / "training_args.bin").write_bytes(b"pickle")
    for step in (2, 4):
        checkpoint = folder / f"checkpoint-{step}"
        checkpoint.mkdir()
        shutil.copy(folder / "model.safetensors", checkpoint)
        shutil.copy(folder / "config.json", checkpoint)
        for name in TRAINING_STATE:
            (checkpoint / name).write_bytes(b"state")
    (folder / "runs" / "Jan01_00-00-00").mkdir(parents=True)
    (folder / "runs" / "Jan01_00-00-00" / "events.out.tfevents.1.host").write_bytes(b"events")
    return folder


def fingerprint(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


class CapturedUpload:
    """Stands in for `create_repo` / `create_commit`: records the repo and every file's bytes."""

    def __init__(self, monkeypatch):
        import huggingface_hub

        self.repos, self.files, self.messages = [], {}, []
        monkeypatch.setattr(huggingface_hub, "create_repo", self.create_repo)
        monkeypatch.setattr(huggingface_hub, "create_commit", self.create_commit)
        monkeypatch.setattr(huggingface_hub, "upload_folder", self.no_network)
        monkeypatch.setattr(huggingface_hub.HfApi, "_validate_yaml", self.no_network)

    @staticmethod
    def no_network(*args, **kwargs):
        raise AssertionError("the test must not contact the Hub")

    def create_repo(self, repo_id, **kwargs):
        self.repos.append((repo_id, kwargs))
        return f"https://hub.invalid/{repo_id}"

    def create_commit(self, repo_id, operations, *, commit_message, **kwargs):
        for operation in operations:
            data = operation.path_or_fileobj
            self.files[operation.path_in_repo] = data if isinstance(data, bytes) else Path(data).read_bytes()
        self.messages.append(commit_message)

        class Info:
            commit_url = f"https://hub.invalid/{repo_id}/commit/1"

        return Info()


def metadata(card: str) -> dict:
    return yaml.safe_load(card.split("---")[1])


def test_a_training_output_folder_uploads_model_files_only_with_a_card_naming_base_model_and_repo(
    converted, tmp_path, monkeypatch, capsys
):
    """TRL's card names the local converted folder the run started from; that folder's card names the Hub model
    it was converted from: the uploaded card names that Hub model and the repo."""
    folder = training_output(converted["folder"], tmp_path / "sft-out", base=str(converted["folder"]))
    before = fingerprint(folder)
    upload = CapturedUpload(monkeypatch)
    capsys.readouterr()
    assert publishing.main([str(folder), "--repo-id", "me/tiny-sft"]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"not uploaded \(intermediate Trainer checkpoints\): checkpoint-2/ \(7 files\), "
        r"checkpoint-4/ \(7 files\)",
        out,
    ), out
    assert "not uploaded (training state and logs): training_args.bin" in out
    assert "not uploaded (subfolders): runs/ (1 files)" in out
    expected = {p.name for p in folder.iterdir() if p.is_file() and p.name != "training_args.bin"}
    assert set(upload.files) == expected
    assert all(upload.files[name] == (folder / name).read_bytes() for name in expected if name != "README.md")
    card = upload.files["README.md"].decode()
    assert metadata(card)["base_model"] == "tiny-org/tiny-next" and "trl" not in metadata(card)["tags"]
    assert 'model_id = "me/tiny-sft"' in card and "fine-tuned from **tiny-org/tiny-next**" in card
    assert "None" not in card
    assert (
        "README.md is not a LLaVA-VR card" in out
        and f"base_model: tiny-org/tiny-next (from {converted['folder']}" in out
    )
    assert fingerprint(folder) == before  # nothing in the folder changed


def test_base_model_flag_wins_and_an_unknown_base_model_is_said_with_its_fix(converted, tmp_path, capsys):
    folder = training_output(converted["folder"], tmp_path / "sft-out", base=None)
    capsys.readouterr()
    assert publishing.main([str(folder), "--repo-id", "me/tiny-sft", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "base_model: unknown" in out and "pass --base-model OWNER/NAME" in out
    assert "base_model" not in metadata(out.split("--- README.md (model card) ---")[1])
    assert publishing.main([str(folder), "--repo-id", "me/tiny-sft", "--dry-run", "--base-model", "org/base"]) == 0
    out = capsys.readouterr().out
    assert metadata(out.split("--- README.md (model card) ---")[1])["base_model"] == "org/base"
    assert "base_model: org/base (from --base-model)" in out
    assert "checkpoint-2" not in out.split("would create")[1]  # not among the listed files


def test_convert_then_push_fills_in_the_repo_id_and_the_sources_hub_id(converted, monkeypatch, capsys):
    folder = converted["folder"]
    written = (folder / "README.md").read_text()
    assert metadata(written)["base_model"] == "tiny-org/tiny-next"  # recorded at conversion time
    assert 'model_id = "OWNER/NAME"' in written
    upload = CapturedUpload(monkeypatch)
    assert publishing.main([str(folder), "--repo-id", "me/tiny-llava-vr"]) == 0
    card = upload.files["README.md"].decode()
    assert metadata(card)["base_model"] == "tiny-org/tiny-next"
    assert 'model_id = "me/tiny-llava-vr"' in card and "OWNER/NAME" not in card
    assert card == written.replace('"OWNER/NAME"', '"me/tiny-llava-vr"')
    assert (folder / "README.md").read_text() == written  # the folder's copy is unchanged
    assert "model_id OWNER/NAME -> me/tiny-llava-vr" in capsys.readouterr().out


def test_a_local_path_base_model_from_an_older_card_is_replaced(converted, tmp_path, capsys):
    folder = tmp_path / "old"
    shutil.copytree(converted["folder"], folder)
    card = (folder / "README.md").read_text().replace("base_model: tiny-org/tiny-next", "base_model: /home/me/src")
    (folder / "README.md").write_text(card)
    capsys.readouterr()
    assert publishing.main([str(folder), "--repo-id", "me/x", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "base_model /home/me/src removed (a local path, not a Hub id)" in out
    assert "base_model" not in metadata(out.split("--- README.md (model card) ---")[1])


def test_every_pickle_that_would_be_uploaded_is_named_in_one_message(converted, tmp_path, capsys):
    folder = training_output(converted["folder"], tmp_path / "sft-out", base="org/base")
    for name in ("pytorch_model.bin", "extra_weights.pt", "head.pkl"):
        (folder / name).write_bytes(b"pickle")
    capsys.readouterr()
    assert publishing.main([str(folder), "--repo-id", "me/x", "--dry-run"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "extra_weights.pt, head.pkl, pytorch_model.bin" in lines[0] and "only safetensors" in lines[0]
    assert "training_args.bin" not in lines[0] and "optimizer.pt" not in lines[0]  # skipped, not refused


def test_a_lora_adapter_folder_points_to_the_merged_checkpoint(converted, tmp_path, capsys):
    folder = tmp_path / "lora-out"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    capsys.readouterr()
    assert publishing.main([str(folder), "--repo-id", "me/x", "--dry-run"]) == 2
    assert "holds a LoRA adapter, not a full LLaVA-VR model: merge it first" in capsys.readouterr().err
    shutil.copytree(converted["folder"], folder / "merged")
    assert publishing.main([str(folder), "--repo-id", "me/x", "--dry-run"]) == 2
    assert f"publish {folder / 'merged'} instead" in capsys.readouterr().err


def test_an_unconverted_checkpoint_or_a_missing_folder_is_named(converted, tmp_path, capsys):
    capsys.readouterr()
    assert publishing.main([str(converted["source"]), "--repo-id", "me/x", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "model_type 'llava_next', not 'llava_vr'" in err and "convert it first" in err
    assert publishing.main([str(tmp_path / "nothing"), "--repo-id", "me/x", "--dry-run"]) == 2
    assert f"{tmp_path / 'nothing'} does not exist" in capsys.readouterr().err
