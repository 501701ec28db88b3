"""`llava-vr sft` refuses what it cannot run with a message that names the fix (unconverted checkpoints, launches that
cannot shard), runs `--bf16` on a CPU, and prints no warning a user cannot act on."""

import dataclasses
import json
import warnings
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForImageTextToText, LlavaNextConfig, LlavaOnevisionConfig

pytest.importorskip("trl")

from llava_vr.hub.refusals import LlavaVRRefusal  # noqa: E402
from llava_vr.testing_utils import tiny_text_config, tiny_vision_config  # noqa: E402
from llava_vr.training import sft_cli  # noqa: E402
from llava_vr.training.preflight import (  # noqa: E402
    accelerator_available,
    check_launch,
    check_sharding,
    check_transformers_supports_training,
)
from llava_vr.training.sft_options import LlavaVRSFTConfig, parse_args  # noqa: E402

cpu_only = pytest.mark.skipif(accelerator_available(), reason="checks the behaviour on a machine without GPU")


def refusal(argv, capsys):
    """Exit status and stderr of `llava-vr sft ARGV`."""
    status = sft_cli.main(argv)
    return status, capsys.readouterr().err


# ---- unconverted checkpoints, adapters, missing paths ---------------------------------------------------------------


@pytest.mark.parametrize(
    "config_class, model_type, architecture",
    [
        (LlavaNextConfig, "llava_next", "LlavaNextForConditionalGeneration"),
        (LlavaOnevisionConfig, "llava_onevision", "LlavaOnevisionForConditionalGeneration"),
    ],
)
def test_unconverted_checkpoint_is_refused_with_the_convert_command(
    config_class, model_type, architecture, tmp_path, capsys
):
    source = tmp_path / "llava-next-tiny"
    config = config_class(vision_config=tiny_vision_config(), text_config=tiny_text_config())
    AutoModelForImageTextToText.from_config(config).save_pretrained(source)  # a whole (tiny) checkpoint
    assert json.loads((source / "config.json").read_text())["architectures"] == [architecture]
    capsys.readouterr()
    status, err = refusal(["--model", str(source), "--output_dir", str(tmp_path / "run")], capsys)
    assert status == 2
    assert err == (
        f"error: --model {source} is a {model_type} checkpoint ({architecture}), not LLaVA-VR: convert it first with "
        f"`llava-vr convert --source {source} --output llava-next-tiny-llava-vr`, then train with "
        "`--model llava-next-tiny-llava-vr`\n"
    )
    assert not (tmp_path / "run").exists()


def test_lmms_lab_checkpoint_with_an_unknown_model_type_is_refused_too(tmp_path, capsys):
    source = tmp_path / "ov"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"model_type": "llava", "architectures": ["LlavaQwenForCausalLM"]}))
    status, err = refusal(["--model", str(source)], capsys)
    assert status == 2 and "is a llava checkpoint (LlavaQwenForCausalLM), not LLaVA-VR: convert it first" in err


def test_adapter_folder_and_missing_folder_say_what_they_are(tmp_path, capsys):
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    status, err = refusal(["--model", str(adapter)], capsys)
    assert status == 2 and f"--model {adapter} is a LoRA adapter folder" in err and "--merge_adapter" in err
    status, err = refusal(["--model", str(tmp_path / "nothing" / "here")], capsys)
    assert status == 2 and err == f"error: --model {tmp_path / 'nothing' / 'here'}: no such folder\n"


def test_a_hub_id_that_is_no_folder_is_looked_up_once_not_retried(monkeypatch, capsys):
    from huggingface_hub import HfApi, constants

    calls = []

    def unreachable(self, repo_id, timeout=None):
        calls.append((repo_id, timeout))
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(HfApi, "model_info", unreachable)
    status, err = refusal(["--model", "runs/stage9"], capsys)
    assert status == 2 and calls == [("runs/stage9", constants.HF_HUB_ETAG_TIMEOUT)]
    assert err == (
        "error: --model runs/stage9: no such local folder, and the Hub cannot be reached to look it up "
        "(Name or service not known)\n"
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    status, err = refusal(["--model", "runs/stage9"], capsys)
    assert status == 2 and "HF_HUB_OFFLINE is set while it is not in the Hub cache" in err and len(calls) == 1


# ---- bf16 on a CPU, warnings ----------------------------------------------------------------------------------------


@cpu_only
def test_bf16_on_a_cpu_only_machine_runs_bf16_autocast_on_the_cpu(tmp_path, capsys):
    training_args, _, _ = parse_args(["--tiny", "--bf16"])
    assert training_args.bf16 and training_args.use_cpu and not training_args.dataloader_pin_memory
    assert LlavaVRSFTConfig(output_dir=str(tmp_path), bf16=True).use_cpu  # from Python too
    seen = []
    handle = torch.autocast.__enter__

    def record(self):
        seen.append((self.device, self.fast_dtype))
        return handle(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.autocast, "__enter__", record)
        trainer = sft_cli.run(
            *parse_args(
                [
                    "--tiny",
                    "--bf16",
                    "--max_steps",
                    "1",
                    "--num_samples",
                    "2",
                    "--output_dir",
                    str(tmp_path / "run"),
                    "--save_strategy",
                    "no",
                ]
            )
        )
    assert ("cpu", torch.bfloat16) in seen
    assert torch.isfinite(torch.tensor(trainer.state.log_history[0]["loss"]))
    assert "no GPU: --bf16 runs as bfloat16 autocast on the CPU" in capsys.readouterr().out


def test_transformers_option_errors_are_one_line_parser_errors(capsys):
    with pytest.raises(SystemExit) as raised:
        parse_args(["--tiny", "--fp16", "--bf16"])
    assert raised.value.code == 2
    assert "error: At most one of fp16 and bf16 can be True" in capsys.readouterr().err


def test_eval_with_jsonl_needs_eval_jsonl_at_parse_time(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--tiny", "--jsonl", "x.jsonl", "--image_root", ".", "--eval_strategy", "steps"])
    assert "evaluation with --jsonl needs --eval_jsonl" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [[], ["--lora"]], ids=["full", "lora"])
def test_a_tiny_run_prints_no_deprecation_pin_memory_or_special_token_warning(extra, tmp_path, capfd):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LlavaVRSFTConfig(output_dir=str(tmp_path))
        status = sft_cli.main(
            ["--tiny", "--max_steps", "1", "--num_samples", "2", "--output_dir", str(tmp_path / "r"), *extra]
        )
    assert status == 0
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "deprecated" in m or "pin_memory" in m], messages
    err = capfd.readouterr().err
    assert "PAD/BOS/EOS" not in err and "pin_memory" not in err and "deprecated" not in err, err


# ---- launches that cannot shard -------------------------------------------------------------------------------------


def test_several_processes_without_a_distributed_run_are_refused(monkeypatch):
    training_args, _, _ = parse_args(["--tiny", "--output_dir", "runs/x"])
    check_launch(training_args)  # one process: fine
    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(
        LlavaVRRefusal,
        match=r"^8 processes were launched but do not form one distributed run \(they found "
        r"no GPU to share\): each would train the whole model alone and all would write runs/x\. .*"
        r"or add --use_cpu",
    ):
        check_launch(training_args)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(LlavaVRRefusal, match=r"accelerate applies the FSDP config on GPUs only") as raised:
        check_launch(training_args)
    assert "--use_cpu" not in str(raised.value)


def test_an_fsdp_config_the_trainer_does_not_apply_is_refused(monkeypatch):
    trainer = SimpleNamespace(
        is_fsdp_enabled=False,
        is_deepspeed_enabled=False,
        accelerator=SimpleNamespace(num_processes=2),
        args=SimpleNamespace(output_dir="runs/x"),
    )
    check_sharding(trainer)  # no sharding asked for
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(
        LlavaVRRefusal,
        match=r"asks for FSDP, but accelerate applies it on GPUs only: here the 2 processes "
        r"would each hold and train a full copy",
    ):
        check_sharding(trainer)
    trainer.is_fsdp_enabled = True
    check_sharding(trainer)


def test_special_tokens_of_the_tiny_model_match_its_tokenizer():
    model, processor = sft_cli.tiny_model_and_processor()
    text = model.config.get_text_config()
    tokenizer = processor.tokenizer
    assert text.eos_token_id == tokenizer.eos_token_id and text.pad_token_id == tokenizer.pad_token_id


# ---- --push_to_hub ---------------------------------------------------------------------------------------------------


def test_push_to_hub_offline_or_unreachable_is_one_line_before_anything_loads(tmp_path, capfd, monkeypatch):
    """Trainer creates the Hub repo when it starts: offline that was a 90-line traceback after loading the model."""
    from huggingface_hub import HfApi, constants

    out = tmp_path / "run"
    argv = ["--tiny", "--push_to_hub", "--hub_model_id", "someone/model", "--output_dir", str(out)]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert sft_cli.main(argv) == 2
    err = capfd.readouterr().err
    assert "error: --push_to_hub: the Hub repo someone/model cannot be reached: HF_HUB_OFFLINE is set" in err
    assert "Traceback" not in err and "llava-vr push" in err

    def unreachable(self, *args, **kwargs):
        raise ConnectionError("Max retries exceeded\nFailed to resolve 'huggingface.co'")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "create_repo", unreachable)
    assert sft_cli.main(argv) == 2
    err = capfd.readouterr().err
    assert (
        "error: --push_to_hub: the Hub repo someone/model cannot be created or reached (Failed to resolve "
        "'huggingface.co'); log in with `hf auth login`" in err
    )
    assert "Traceback" not in err and not out.exists()


@cpu_only
@pytest.mark.parametrize("variable", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_a_sharded_launch_without_gpu_is_refused_before_the_options_are_parsed(variable, monkeypatch, capsys):
    """`accelerate launch --config_file examples/accelerate/fsdp.yaml` on a CPU: each of the 8 processes refused
    only after building TrainingArguments (joining the process group, a Transformers warning each); now before."""
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv(variable, "true")
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)

    def not_parsed(*args, **kwargs):
        raise AssertionError("options parsed before the launch was refused")

    monkeypatch.setattr(sft_cli, "parse_args", not_parsed)
    assert sft_cli.main(["--tiny", "--output-dir", "runs/x"]) == 2
    sharding = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}[variable]
    assert capsys.readouterr().err == (
        f"error: 8 processes were launched but do not form one distributed run (accelerate applies the {sharding} "
        "config on GPUs only): each would train the whole model alone and all would write runs/x. Launch on GPUs, "
        "or on a CPU-only machine run one process: `llava-vr sft ... --output_dir runs/x` (no `accelerate launch`, "
        "or `--num_processes 1`)\n"
    )


def test_training_refuses_a_transformers_without_activation_checkpointing_naming_the_version_it_needs():
    @dataclasses.dataclass
    class TrainingArgumentsBefore523:  # Transformers 5.19's spelling: gradient_checkpointing only
        gradient_checkpointing: bool = False

    with pytest.raises(LlavaVRRefusal, match=r"Transformers 5\.23 or newer"):
        check_transformers_supports_training(TrainingArgumentsBefore523)
    check_transformers_supports_training()  # the installed one (the dev environment's) is accepted
