"""The parallel engine of a run: Accelerate set up from the launcher, checked against the config.

`setup_engine` builds the Accelerator (gloo process group on CPU, or DeepSpeed ranks each believe
they are rank 0 of 1), runs the start-up check (sft/startup.py), makes the DeepSpeed config
follow our batch sizes and clipping (one value in one place), and seeds every RNG.

Invariant: the returned engine is the one `distributed.*` names, or a one-line UserError was raised.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

import torch

from sft.startup import check_setup, deepspeed_offload, env_world_size


def found_engine(distributed_type: str, num_processes: int, offload: bool | None) -> str:
    """The `distributed=` name of what the launcher set up (for distributed=auto)."""
    if distributed_type == "DEEPSPEED":
        return "zero3_offload" if offload else "zero3"
    if distributed_type == "FSDP":
        return "fsdp2"
    return "ddp" if distributed_type.startswith("MULTI") or num_processes > 1 else "single"


@dataclass(frozen=True)
class Engine:
    accelerator: Any  # accelerate.Accelerator
    kind: str  # the distributed= name in force (auto resolved to what the launcher set up)
    cuda: bool
    world: int  # processes
    rank: int
    ds_config: dict | None  # the DeepSpeed config in use, if any

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def name(self) -> str:
        """What checkpoints record and compare: e.g. MULTI_CPU, DEEPSPEED/zero3."""
        acc = self.accelerator
        ds = acc.state.deepspeed_plugin
        return acc.distributed_type.value + (f"/zero{ds.zero_stage}" if ds is not None else "")

    def all_reduce(self, values: list[float]) -> list[float]:
        """Sum `values` over the ranks (float64), one collective."""
        t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        if self.world > 1:
            t = self.accelerator.reduce(t, reduction="sum")
        return t.tolist()


_GROUPS_LIVED = [False]  # a multi-process group was set up in this process (see end_process)


def _use_cpu_env() -> bool:
    return os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")


def setup_engine(
    *,
    engine: str,
    expect_processes: int,
    zero_stage: int,
    backend: str,
    timeout_minutes: int,
    grad_accum: int,
    micro_batch_size: int,
    max_grad_norm: float,
    dtype: str,
    seed: int,
    tracking: dict | None = None,
) -> Engine:
    """`tracking`: the trackers' Accelerator arguments (sft/trackers.py `accelerator_args`)."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, set_seed

    cuda = torch.cuda.is_available() and not _use_cpu_env()
    backend = backend if backend != "auto" else ("nccl" if cuda else "gloo")
    launched = (env_world_size() or 1) > 1
    handlers = (
        [InitProcessGroupKwargs(backend=backend, timeout=timedelta(minutes=timeout_minutes))]
        if launched
        else []
    )
    acc = Accelerator(
        gradient_accumulation_steps=grad_accum,
        mixed_precision={"bf16": "bf16", "fp16": "fp16"}.get(dtype, "no"),
        # cpu=True would make Accelerate drop DeepSpeed; DeepSpeed finds the CPU by itself
        kwargs_handlers=handlers,
        cpu=not cuda and os.environ.get("ACCELERATE_USE_DEEPSPEED") != "true",
        **(tracking or {}),
    )
    ds = acc.state.deepspeed_plugin
    offload = deepspeed_offload(ds.deepspeed_config) if ds is not None else None
    kind = engine
    if engine == "auto":
        kind = found_engine(acc.distributed_type.value, acc.num_processes, offload)
        zero_stage = 0  # follow the DeepSpeed config's stage
    check_setup(
        expected=kind,
        expect_processes=expect_processes,
        expect_zero_stage=zero_stage,
        distributed_type=acc.distributed_type.value,
        num_processes=acc.num_processes,
        zero_stage=int(ds.zero_stage) if ds is not None else 0,
        env_world_size=env_world_size(),
        cuda=cuda,
        offload=offload,
        use_cpu_env=_use_cpu_env(),
    )
    if ds is not None:  # one value in one place: our config owns batch sizes and clipping
        conf = ds.deepspeed_config
        conf["train_micro_batch_size_per_gpu"] = micro_batch_size
        conf["gradient_accumulation_steps"] = grad_accum
        conf["train_batch_size"] = micro_batch_size * grad_accum * acc.num_processes
        conf["gradient_clipping"] = max_grad_norm
        conf.setdefault("zero_optimization", {})["stage3_gather_16bit_weights_on_model_save"] = True
    set_seed(seed)
    if acc.num_processes > 1:
        _GROUPS_LIVED[0] = True
    if acc.is_main_process:
        how = "found: distributed=auto" if engine == "auto" else f"distributed={engine}, checked"
        stage = f", ZeRO stage {ds.zero_stage}" if ds is not None else ""
        print(
            f"[sft] engine {kind} ({acc.distributed_type.value}, {acc.num_processes} "
            f"process(es){stage}, {'CUDA' if cuda else 'CPU'}; {how})",
            flush=True,
        )
    return Engine(
        accelerator=acc,
        kind=kind,
        cuda=cuda,
        world=acc.num_processes,
        rank=acc.process_index,
        ds_config=ds.deepspeed_config if ds is not None else None,
    )


def close_distributed(engine: Engine | None) -> None:
    """Release Accelerate's and DeepSpeed's hold on the run, destroy every group, end trackers.

    Invariant: afterwards torch.distributed is uninitialised, DeepSpeed's group registry is
    empty, and neither Accelerate nor ZeRO-3's module-level forward stack refers to this run's
    model (so a sweep's next job in the same process is not kept beside it). The groups' worker
    threads may still run: torch's DDP wrapper and ZeRO-3's autograd hooks keep the groups
    referenced (measured), which is why a multi-process run ends through `end_process`.
    """
    if engine is not None:
        try:  # its references to the prepared model, optimizer, engine (DeepSpeed's destroy())
            engine.accelerator.free_memory()
        except Exception as e:  # noqa: BLE001 - cleanup never replaces the run's own outcome
            print(f"[sft] warning: releasing the engine failed: {e!r}", file=sys.stderr, flush=True)
    stack = getattr(
        sys.modules.get("deepspeed.runtime.zero.parameter_offload"), "FWD_MODULE_STACK", None
    )
    if stack:  # ZeRO-3 puts every model it wraps at the base of this module-level list, for good
        stack.clear()
    gc.collect()  # ZeRO-3 hooks tie parameters and engine in reference cycles
    ds_comm = sys.modules.get("deepspeed.comm.comm")
    if getattr(ds_comm, "cdb", None) is not None and torch.distributed.is_initialized():
        ds_comm.destroy_process_group()  # also empties deepspeed.utils.groups' cached groups
    if engine is not None:
        engine.accelerator.end_training()  # trackers; destroys a group still alive
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def end_process(code: int) -> NoReturn:
    """Exit with `code`; after a multi-process run, without interpreter shutdown.

    torch's DDP wrapper and DeepSpeed's ZeRO-3 hooks keep their process groups referenced past
    `close_distributed` (measured: gloo's worker threads still run after it), so those groups
    would be torn down while Python itself is being finalised, where a race aborts a finished run
    with SIGABRT ("terminate called without an active exception"). By the time this is called the
    run is over: checkpoints, summary and trackers are closed, so nothing is lost by skipping the
    finaliser; the output streams and logging are flushed first. A single process exits normally.
    """
    if not _GROUPS_LIVED[0]:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
