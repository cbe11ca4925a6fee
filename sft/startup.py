"""Start-up self-check: the parallel setup we got must be the one the config asked for.

Several launch mistakes fail silently: a 2-process config started as one process, `--cpu
--num_processes 2` starting one process, `--multi_gpu` without CUDA starting two unsynchronised
trainings, `ACCELERATE_USE_CPU=true` making Accelerate drop DeepSpeed, DeepSpeed ranks that each
think they are rank 0, a ZeRO-3 config launched with the offload JSON (or without it), FSDP asked
for on CPU (Accelerate drops its FSDP plugin there). The checks compare what Accelerate reports
with `distributed.*` and refuse a mismatch with one line naming both sides.

Invariant: `check_setup` returns only if the engine, the number of processes, the world size, the
ZeRO stage and the offload setting all match the config (0 / None accepts anything), and
`check_wrapped` returns only if the prepared model is wrapped by the engine the config names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from sft.errors import UserError

ENGINE_OF = {
    "single": "NO",
    "ddp": "MULTI",
    "zero3": "DEEPSPEED",
    "zero3_offload": "DEEPSPEED",
    "fsdp2": "FSDP",
}
# class name in the prepared model's MRO that proves the engine wrapped it (one process: unwrapped)
WRAPPER_OF = {
    "ddp": "DistributedDataParallel",
    "zero3": "DeepSpeedEngine",
    "zero3_offload": "DeepSpeedEngine",
    "fsdp2": "FSDPModule",
}


def describe(distributed_type: str, num_processes: int, zero_stage: int) -> str:
    extra = f", ZeRO stage {zero_stage}" if distributed_type == "DEEPSPEED" else ""
    return f"{distributed_type} with {num_processes} process(es){extra}"


def _launch_hint(expected: str, use_cpu_env: bool) -> str:
    if ENGINE_OF[expected] == "DEEPSPEED":
        if use_cpu_env:
            return (
                "ACCELERATE_USE_CPU=true makes Accelerate drop DeepSpeed: unset it (DeepSpeed finds the "
                "CPU by itself)"
            )
        return (
            f"launch with `accelerate launch --config_file launch/accelerate/{expected}.yaml` "
            "(DeepSpeed installed: pip install sft[deepspeed])"
        )
    if expected == "ddp":
        return (
            "launch with `accelerate launch --config_file launch/accelerate/ddp.yaml --num_processes N` "
            "(on CPU add ACCELERATE_USE_CPU=true)"
        )
    return f"launch with `accelerate launch --config_file launch/accelerate/{expected}.yaml` or set distributed=<matching option>"


def check_setup(
    *,
    expected: str,
    expect_processes: int,
    expect_zero_stage: int,
    distributed_type: str,
    num_processes: int,
    zero_stage: int,
    env_world_size: int | None = None,
    cuda: bool | None = None,
    offload: bool | None = None,
    use_cpu_env: bool = False,
) -> None:
    """Raise UserError on any mismatch between the config and the running setup.

    distributed_type: Accelerate's `DistributedType` value (NO, MULTI_GPU, MULTI_CPU, DEEPSPEED, FSDP).
    cuda: whether this run trains on CUDA (None: unknown). offload: whether DeepSpeed offloads
    parameters and optimizer states to CPU (None: not DeepSpeed / unknown). use_cpu_env:
    ACCELERATE_USE_CPU is set (only used to name the cause in the message).
    """
    got = describe(distributed_type, num_processes, zero_stage)
    if expected == "fsdp2" and cuda is False:
        raise UserError(
            "distributed=fsdp2 needs CUDA GPUs: Accelerate drops its FSDP plugin on CPU, so the "
            "model would not be sharded; use distributed=ddp or distributed=zero3 on CPU"
        )
    want_engine = ENGINE_OF[expected]
    engine_ok = (
        distributed_type.startswith("MULTI")
        if want_engine == "MULTI"
        else distributed_type == want_engine
    )
    if expected == "ddp" and distributed_type == "NO" and num_processes == 1:
        engine_ok = expect_processes in (0, 1)
    if not engine_ok:
        raise UserError(
            f"distributed={expected} expects {want_engine.lower()} but the launcher started {got}; "
            f"{_launch_hint(expected, use_cpu_env)}"
        )
    if expect_processes and num_processes != expect_processes:
        raise UserError(
            f"distributed.expect_processes={expect_processes} but the launcher started {got}; "
            "fix --num_processes/--num_machines of the launch or the config"
        )
    if env_world_size is not None and env_world_size != num_processes:
        raise UserError(
            f"WORLD_SIZE={env_world_size} in the environment but Accelerate sees {got}; the process group "
            "was not initialised as launched (on CPU DeepSpeed needs the gloo backend)"
        )
    if expect_zero_stage and distributed_type == "DEEPSPEED" and zero_stage != expect_zero_stage:
        raise UserError(
            f"distributed.zero_stage={expect_zero_stage} but DeepSpeed runs stage {zero_stage}; "
            "use the matching launch/deepspeed/*.json"
        )
    if (
        offload is not None
        and want_engine == "DEEPSPEED"
        and offload != (expected == "zero3_offload")
    ):
        other = "zero3" if expected == "zero3_offload" else "zero3_offload"
        raise UserError(
            f"distributed={expected} but the DeepSpeed config {'offloads' if offload else 'does not offload'} "
            f"to CPU (it is {other}'s); launch with launch/accelerate/{expected}.yaml or set distributed={other}"
        )


def deepspeed_offload(ds_config: dict) -> bool:
    """True when a DeepSpeed config offloads optimizer states or parameters to CPU/NVMe."""
    zero = ds_config.get("zero_optimization", {}) or {}
    return any(
        str((zero.get(k) or {}).get("device", "none")).lower() not in ("none", "")
        for k in ("offload_optimizer", "offload_param")
    )


def check_wrapped(expected: str, num_processes: int, class_names: Sequence[str]) -> None:
    """Raise UserError unless the prepared model's classes (its MRO names) show the expected engine."""
    if expected == "single" or (expected == "ddp" and num_processes == 1):
        found = [w for w in set(WRAPPER_OF.values()) if w in class_names]
        if found:
            raise UserError(
                f"distributed={expected} but the model was wrapped by {found[0]}; "
                "launch with launch/accelerate/single.yaml or set distributed=<engine>"
            )
        return
    want = WRAPPER_OF[expected]
    if want not in class_names:
        raise UserError(
            f"distributed={expected} expects the model wrapped by {want} but it is {class_names[0]}; "
            f"the engine did not take the model: {_launch_hint(expected, False)}"
        )


def env_world_size() -> int | None:
    v = os.environ.get("WORLD_SIZE")
    return int(v) if v and v.isdigit() else None
