"""One actionable line for an out-of-memory error: what ran out, and the knobs to turn."""

from __future__ import annotations

import torch


def oom_advice(
    *,
    rank: int,
    step: int,
    micro_batch_size: int,
    grad_accum: int,
    rows: str,
    length_key: str,
    length: int,
    zero_stage: int,
    offload: str,
    gradient_checkpointing: bool,
    cuda: bool,
) -> str:
    """The advice, cheapest knob first. `rows` says what a micro-batch holds and `length_key`
    which config key sets its row length (both from the batching choice)."""
    tips = []
    if not gradient_checkpointing:
        tips.append("model.gradient_checkpointing=true")
    if micro_batch_size > 1:
        tips.append(
            f"train.micro_batch_size={micro_batch_size // 2} train.grad_accum={grad_accum * 2} "
            "(same global batch)"
        )
    tips.append(f"{length_key}={max(length // 2, 1)}")
    if zero_stage < 3:
        tips.append("distributed=zero3 (shards weights, gradients and optimizer state)")
    elif offload == "none":
        tips.append("distributed=zero3_offload (optimizer state in CPU memory)")
    memory = ""
    if cuda and torch.cuda.is_available():
        dev = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(dev)
        memory = (
            f"; cuda:{dev} {(total - free) / 2**30:.1f} of {total / 2**30:.1f} GiB in use, peak "
            f"allocated {torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB"
        )
    return (
        f"out of memory on rank {rank} at step {step}: micro-batch of {rows}, ZeRO stage "
        f"{zero_stage}, offload {offload}, gradient_checkpointing="
        f"{str(gradient_checkpointing).lower()}{memory}; try " + ", or ".join(tips)
    )


def oom_message(
    cfg, *, rank: int = 0, step: int = 1, ds_config: dict | None = None, cuda: bool = False
) -> str:
    """`oom_advice` for a job config (and the DeepSpeed config it ran with, if any)."""
    zero = (ds_config or {}).get("zero_optimization", {})
    offload = (
        "/".join(
            sorted(
                {
                    str(zero.get(k, {}).get("device", "none"))
                    for k in ("offload_optimizer", "offload_param")
                }
            )
        )
        if zero
        else "none"
    )
    batching = cfg.collator.build(cfg.data.max_length)
    rows, length_key = batching.oom_rows(cfg.train.micro_batch_size)
    return oom_advice(
        rank=rank,
        step=step,
        micro_batch_size=cfg.train.micro_batch_size,
        grad_accum=cfg.train.grad_accum,
        rows=rows,
        length_key=length_key,
        length=batching.capacity,
        zero_stage=int(zero.get("stage", 0)) if zero else 0,
        offload=offload,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        cuda=cuda,
    )
