"""Sharded training on CPU (2 processes, gloo).

* `torchrun --nproc_per_node 2 fsdp_worker.py`: the tiny model under FSDP2 `fully_shard` (every `_no_split_modules`
  block, then the root): loss and gradients equal the unsharded model's, VR gets gradients, and a text-only rank
  beside an image rank does not hang.
* `DS_ACCELERATOR=cpu torchrun --nproc_per_node 2 zero3_worker.py`: DeepSpeed ZeRO-3 with one text-only rank matches
  the unsharded model.
* `accelerate launch` with `examples/accelerate/fsdp.yaml` and the DeepSpeed ZeRO-2 / ZeRO-3 configs
  runs `-m llava_vr sft --tiny` (the `llava-vr sft` command) end to end and saves a loadable checkpoint.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).resolve().parent / "fsdp_worker.py"
ZERO3_WORKER = Path(__file__).resolve().parent / "zero3_worker.py"
# generous: on a loaded 2-core machine each rank's imports (torch, Transformers, DeepSpeed) take minutes
TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(worker, out, env_overrides=None, what="run"):
    """`torchrun --nproc_per_node 2 WORKER OUT` on CPU, killed (with both workers) after TIMEOUT_S; the ranks' JSON."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(worker),
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env_overrides or {})}
    # own session, so that on a timeout the whole group (torchrun and both workers) is killed, not just torchrun
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{what} did not finish in {TIMEOUT_S} s (a rank hangs in a collective?)\n{output[-3000:]}")
    assert process.returncode == 0, f"torchrun failed ({process.returncode}):\n{output[-6000:]}"
    results = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(r["finished"] for r in results)
    return results


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory):
    return run_torchrun(WORKER, tmp_path_factory.mktemp("fsdp"), what="FSDP2 run")


def test_every_no_split_block_is_sharded(fsdp_results):
    for result in fsdp_results:
        assert result["wrapped_classes"] == ["CLIPEncoderLayer", "Qwen2DecoderLayer", "VisionRemember"]
        assert result["num_wrapped"] == 4 + 5 + 2  # tiny config: 4 vision layers, 5 decoder layers, VR at 1 and 4


def test_sharded_loss_and_gradients_match_the_unsharded_model(fsdp_results):
    for result in fsdp_results:
        assert result["step1_loss"] == pytest.approx(result["step1_reference_loss"], rel=1e-5)
        assert result["grads_compared"] > 100
        assert result["max_grad_diff"] < 1e-5, result["max_grad_diff_name"]


def test_vision_remember_parameters_get_gradients_under_fsdp2(fsdp_results):
    grads = fsdp_results[0]["vr_grad_abs_sums"]
    assert {name.split(".")[0] for name in grads} == {"1", "4"}
    assert all(value >= 0 for value in grads.values()), "a VR parameter got no gradient"
    # a key bias shifts every score of a query equally, so softmax makes its gradient zero (up to rounding)
    assert all(value > 0 for name, value in grads.items() if not name.endswith("k_proj.bias")), grads


def test_text_only_rank_beside_an_image_rank_does_not_hang(fsdp_results):
    rank0, rank1 = fsdp_results
    assert not rank0["step2_text_only"] and rank1["step2_text_only"]
    assert all(torch.isfinite(torch.tensor(r["step2_loss"])) for r in fsdp_results)


@pytest.fixture(scope="module")
def zero3_results(tmp_path_factory):
    return run_torchrun(ZERO3_WORKER, tmp_path_factory.mktemp("zero3"), {"DS_ACCELERATOR": "cpu"}, "ZeRO-3 run")


def test_zero3_step_with_a_text_only_rank_matches_the_unsharded_model(zero3_results):
    """DeepSpeed ZeRO-3 over 2 CPU processes, rank 1 drawing a text-only batch beside rank 0's images: no hang, each
    rank's loss is the unsharded model's on its batch, the gathered gradients are the unsharded ones averaged over
    both batches (the text-only rank's blank-image pass adds nothing), every parameter partitioned."""
    rank0, rank1 = zero3_results
    assert not rank0["step1_text_only"] and rank1["step1_text_only"]
    for result in zero3_results:
        assert result["partitioned"] == result["parameters"] > 100
        assert result["step1_loss"] == pytest.approx(result["step1_reference_loss"], rel=1e-5)
        assert result["grads_compared"] == result["parameters"]
        assert result["max_grad_diff"] < 1e-5, result["max_grad_diff_name"]
        assert torch.isfinite(torch.tensor(result["step2_loss"]))


def test_vision_remember_trains_under_zero3(zero3_results):
    grads = zero3_results[0]["vr_grad_abs_sums"]
    assert {name.split(".")[3] for name in grads} == {"1", "4"}
    # a key bias shifts every score of a query equally, so softmax makes its gradient zero (up to rounding)
    assert all(value > 0 for name, value in grads.items() if not name.endswith("k_proj.bias")), grads
    assert all(r["vr_moved"] == r["vr_parameters"] > 0 for r in zero3_results)


REPO = Path(__file__).resolve().parents[1]


def run_accelerate(config_file, script_args, env_overrides, cwd=REPO, shim=True, expect_success=True):
    """`accelerate launch --config_file examples/accelerate/<config_file> --num_processes 2` on CPU through
    `accelerate_cpu_shim.py` (which bends only accelerate's device checks; `shim=False`: as a user would launch it),
    killed after TIMEOUT_S; returns the output (stdout and stderr)."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "examples/accelerate" / config_file),
        "--num_processes",
        "2",
        "--main_process_port",
        str(free_port()),
        *(["--mixed_precision", "no"] if config_file.startswith("fsdp") else []),
        # `-m llava_vr sft` as `python -m llava_vr sft` (= `llava-vr sft`); the shim takes the same `-m MODULE`
        *([str(REPO / "modeling_tests/accelerate_cpu_shim.py")] if shim else []),
        "-m",
        "llava_vr",
        "sft",
        *script_args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **env_overrides}
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"accelerate run ({config_file}) did not finish in {TIMEOUT_S} s\n{output[-3000:]}")
    assert (process.returncode == 0) is expect_success, output[-6000:]
    return output


def check_saved_checkpoint(out):
    """A normal LLaVA-VR checkpoint: full weights, config with auto_map, the code files, the processor; loads with
    trust_remote_code; the run logged finite losses."""
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "modeling_llava_vr.py", "vision_remember_llava_vr.py"} <= files
    assert "processor_config.json" in files
    assert not any(name.startswith("_fsdp") for name in files), files
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageTextToText"] == "modeling_llava_vr.LlavaVRForConditionalGeneration"
    state = json.loads((next(out.glob("checkpoint-*")) / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))

    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(out, trust_remote_code=True)  # fails on sharded tensors


def test_accelerate_fsdp2_config_trains_and_saves_a_loadable_checkpoint(tmp_path):
    """`accelerate launch --config_file examples/accelerate/fsdp.yaml -m llava_vr sft` on 2 CPU processes:
    the transformer wrap finds every class of `_no_split_modules`, LlavaVRSFTTrainer's per-component optimizer works
    on FSDP2, gradient checkpointing runs, and the FULL_STATE_DICT save is a normal trust_remote_code checkpoint
    (not torch's `_fsdp_*` files: `LlavaVRPreTrainedModel.save_pretrained` writes its own)."""
    out = tmp_path / "run"
    run_accelerate(
        "fsdp.yaml",
        [
            "--tiny",
            "--max-steps",
            "2",
            "--num-samples",
            "4",
            "--per-device-train-batch-size",
            "1",
            "--activation-checkpointing",
            "--save-steps",
            "1000",
            "--output-dir",
            str(out),
        ],
        {"ACCELERATE_USE_CPU": "true"},
    )
    assert (next(out.glob("checkpoint-*")) / "pytorch_model_fsdp.bin").exists(), "the run was not sharded by FSDP"
    check_saved_checkpoint(out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without GPU")
def test_accelerate_fsdp_config_on_a_cpu_only_machine_is_refused_not_run_twice(tmp_path):
    """As a user would launch it (no shim): accelerate applies FSDP on GPUs only, and 2 processes without GPU would
    each train the whole model into the same folder. The command refuses before loading anything."""
    out = tmp_path / "run"
    output = run_accelerate(
        "fsdp.yaml", ["--tiny", "--max-steps", "1", "--output-dir", str(out)], {}, shim=False, expect_success=False
    )
    assert (
        "error: 2 processes were launched but do not form one distributed run (accelerate applies the FSDP config "
        "on GPUs only)" in output
    )
    assert "trainable parameters" not in output and not out.exists()
    # refused before the options are parsed: no process joined a process group (Transformers warned once each)
    assert "process group is initialized" not in output


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_accelerate_deepspeed_configs_train_with_component_learning_rates(stage, tmp_path):
    """The DeepSpeed configs on 2 CPU processes (gloo, DeepSpeed's CPU accelerator): ZeRO-3 loads a checkpoint under
    `zero.Init` and trains stage 1 with LlavaVRSFTTrainer's optimizer (no "optimizer" block in the JSON);
    the final save gathers full weights. deepspeed is a dev dependency: these run, never skip."""
    for config in ("deepspeed_zero2.json", "deepspeed_zero3.json"):
        assert "optimizer" not in json.loads((REPO / "examples/accelerate" / config).read_text())
    script_args = [
        "--max-steps",
        "2",
        "--num-samples",
        "4",
        "--per-device-train-batch-size",
        "1",
        "--save-steps",
        "1000",
        "--output-dir",
        str(tmp_path / "run"),
    ]
    if stage == "zero3":
        from llava_vr.training.sft_cli import tiny_model_and_processor

        model, processor = tiny_model_and_processor()
        model.save_pretrained(tmp_path / "base")
        processor.save_pretrained(tmp_path / "base")
        script_args += ["--model", str(tmp_path / "base"), "--image-size", "56", "--stage", "stage1"]
    else:
        script_args += ["--tiny"]
    run_accelerate(f"deepspeed_{stage}.yaml", script_args, {"DS_ACCELERATOR": "cpu"})
    checkpoint = next((tmp_path / "run").glob("checkpoint-*"))
    assert (checkpoint / "latest").exists(), "the run did not go through DeepSpeed"
    trained = check_saved_checkpoint(tmp_path / "run")
    if stage == "zero3":  # stage 1: tower, LLM and head untouched, projector and VR moved
        from safetensors.torch import load_file

        from llava_vr.training import component_of

        base = load_file(tmp_path / "base" / "model.safetensors")
        moved = {name for name, param in trained.state_dict().items() if not torch.equal(param, base[name])}
        assert {component_of(name) for name in moved} == {"projector", "vision_remember"}, sorted(moved)[:5]
