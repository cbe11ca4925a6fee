"""Start-up self-check: the parallel setup we got must be the one the config asked for.

Several launch mistakes fail silently (a 2-process config started as one process, `--cpu
--num_processes 2` starting one process, DeepSpeed ranks that each think they are rank 0). The
check compares what Accelerate reports with `distributed.*` and refuses a mismatch with one line
naming both sides.

Invariant: `check_setup` returns only if the engine, the number of processes and the ZeRO stage
all match the config (a value of 0 / "auto" in the config accepts anything).
"""

from __future__ import annotations

import os

from sft.errors import UserError

ENGINE_OF = {"single": "NO", "ddp": "MULTI", "zero3": "DEEPSPEED", "zero3_offload": "DEEPSPEED", "fsdp2": "FSDP"}


def describe(distributed_type: str, num_processes: int, zero_stage: int) -> str:
    extra = f", ZeRO stage {zero_stage}" if distributed_type == "DEEPSPEED" else ""
    return f"{distributed_type} with {num_processes} process(es){extra}"


def check_setup(*, expected: str, expect_processes: int, expect_zero_stage: int, distributed_type: str,
                num_processes: int, zero_stage: int, env_world_size: int | None = None) -> None:
    """Raise UserError on any mismatch between the config and the running setup."""
    got = describe(distributed_type, num_processes, zero_stage)
    want_engine = ENGINE_OF[expected]
    engine_ok = (distributed_type.startswith("MULTI") if want_engine == "MULTI" else distributed_type == want_engine)
    if expected == "ddp" and distributed_type == "NO" and num_processes == 1:
        engine_ok = expect_processes in (0, 1)
    if not engine_ok:
        raise UserError(
            f"distributed={expected} expects {want_engine.lower()} but the launcher started {got}; "
            f"launch with `accelerate launch --config_file launch/accelerate/{expected}.yaml` "
            f"(on CPU: ACCELERATE_USE_CPU=true) or set distributed=<matching option>")
    if expect_processes and num_processes != expect_processes:
        raise UserError(
            f"distributed.expect_processes={expect_processes} but the launcher started {got}; "
            "fix --num_processes/--num_machines of the launch or the config")
    if env_world_size is not None and env_world_size != num_processes:
        raise UserError(
            f"WORLD_SIZE={env_world_size} in the environment but Accelerate sees {got}; the process group "
            "was not initialised as launched (on CPU DeepSpeed needs the gloo backend)")
    if expect_zero_stage and distributed_type == "DEEPSPEED" and zero_stage != expect_zero_stage:
        raise UserError(f"distributed.zero_stage={expect_zero_stage} but DeepSpeed runs stage {zero_stage}; "
                        "use the matching launch/deepspeed/*.json")


def env_world_size() -> int | None:
    v = os.environ.get("WORLD_SIZE")
    return int(v) if v and v.isdigit() else None
