"""Building a run's model and optimizer from its config, on the engine the launcher set up.

Invariant: the model is prepared (wrapped) by the engine the config names (checked), its
optimizer decays matrices only, and the schedule is stepped once per optimizer step by the
trainer (Accelerate's wrapper would step it once per process).
"""

from __future__ import annotations

import contextlib

import torch

from sft.engine import Engine
from sft.models.build import apply_lora, load_model
from sft.schedule import warmup_then_decay
from sft.startup import check_wrapped


def build_model(m, *, engine: Engine, attn: str, vocab_size: int, seed: int) -> torch.nn.Module:
    """The model of `model.*` (a ModelConfig) with attention `attn`, LoRA applied when enabled."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    # ZeRO-3 init partitions weights with collectives while they are built: all ranks together
    together = is_deepspeed_zero3_enabled()
    deepspeed = engine.ds_config is not None
    # bf16 without DeepSpeed: fp32 master weights + bf16 autocast (pure bf16 AdamW loses small
    # updates); DeepSpeed keeps its own fp32 master copy, so it loads bf16 weights directly
    dtype = "fp32" if m.dtype == "bf16" and not deepspeed and not m.lora.enabled else m.dtype
    with contextlib.nullcontext() if together else engine.accelerator.main_process_first():
        model = load_model(
            m.name_or_path,
            arch=m.arch,
            dtype=dtype,
            attn_implementation=attn,
            gradient_checkpointing=m.gradient_checkpointing,
            trust_remote_code=m.trust_remote_code,
            dropout=m.dropout,
            vocab_size=max(vocab_size, m.tiny_vocab_size),
            seed=seed,
            tiny_hidden_size=m.tiny_hidden_size,
            tiny_layers=m.tiny_layers,
        )
    if m.lora.enabled:
        lo = m.lora
        model = apply_lora(model, lo.r, lo.alpha, lo.dropout, lo.target_modules)
    return model


def build_optimizer(model, o, *, engine: Engine, expected_engine: str, total_steps: int):
    """(prepared model, optimizer, LambdaLR schedule) for `optim.*` (an OptimConfig)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": o.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    model, optimizer = engine.accelerator.prepare(model, opt)
    check_wrapped(expected_engine, engine.world, [c.__name__ for c in type(model).__mro__])
    base = getattr(optimizer, "optimizer", optimizer)
    while not isinstance(base, torch.optim.Optimizer):  # DeepSpeed's ZeRO wrapper holds AdamW
        base = base.optimizer
    factor = warmup_then_decay(
        o.schedule, int(o.warmup_ratio * total_steps), total_steps, o.min_lr_ratio
    )
    # its state travels as JSON in trainer_state.json, not through register_for_checkpointing
    # (Accelerate unpickles custom objects with weights_only=False)
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(base, factor)
