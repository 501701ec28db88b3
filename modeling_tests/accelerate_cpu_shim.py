"""Runs a script or `-m MODULE` under `accelerate launch` with the FSDP2 or DeepSpeed configs of `examples/accelerate/`
on CPU, for tests (no GPU here). The configs and the command are used unchanged; only accelerate's device checks are
bent:

* FSDP (`ACCELERATE_USE_CPU=true`): accelerate applies its FSDP config on accelerator devices only and stays plain
  multi-CPU data parallel on CPU; here `AcceleratorState` takes the FSDP plugin the launcher built from the YAML.
* DeepSpeed (`DS_ACCELERATOR=cpu`, gloo): accelerate finds no backend without a GPU and would run one process as if
  alone; here the distributed backend is gloo on CPU, as DeepSpeed's CPU accelerator uses.

    ACCELERATE_USE_CPU=true accelerate launch --config_file examples/accelerate/fsdp.yaml --num_processes 2 \
        --mixed_precision no modeling_tests/accelerate_cpu_shim.py -m llava_vr sft --tiny ...
    DS_ACCELERATOR=cpu accelerate launch --config_file examples/accelerate/deepspeed_zero3.yaml --num_processes 2 \
        modeling_tests/accelerate_cpu_shim.py -m llava_vr sft --tiny ...
"""

import os
import runpy
import sys

import torch
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_original_init = AcceleratorState.__init__
_original_prepare_backend = PartialState._prepare_backend
_original_set_device = PartialState.set_device


def _flag(name):
    return os.environ.get(name, "false").lower() == "true"


def _init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if _flag("ACCELERATE_USE_FSDP") and fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = self.distributed_type  # as accelerate does on GPUs


def _prepare_backend_deepspeed_on_cpu(self, cpu=False, sagemaker_dp=False, backend=None):
    backend_name, distributed_type = _original_prepare_backend(self, cpu, sagemaker_dp, backend)
    if (
        _flag("ACCELERATE_USE_DEEPSPEED")
        and not torch.cuda.is_available()
        and int(os.environ.get("LOCAL_RANK", -1)) != -1
        and distributed_type == DistributedType.NO
    ):
        return "gloo", DistributedType.MULTI_CPU
    return backend_name, distributed_type


def _set_device_cpu(self):
    if (
        self.device is None
        and self.distributed_type in (DistributedType.MULTI_CPU, DistributedType.DEEPSPEED)
        and (not torch.cuda.is_available())
    ):
        self.device = torch.device("cpu")
        return
    _original_set_device(self)


AcceleratorState.__init__ = _init_with_fsdp_on_cpu
PartialState._prepare_backend = _prepare_backend_deepspeed_on_cpu
PartialState.set_device = _set_device_cpu

if __name__ == "__main__":
    if sys.argv[1] == "-m":  # `-m MODULE ARGS...`, as `python -m MODULE ARGS...`
        module, sys.argv = sys.argv[2], sys.argv[2:]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        script, sys.argv = sys.argv[1], sys.argv[1:]
        runpy.run_path(script, run_name="__main__")
