"""Start-up memory check: refuse a run whose estimated peak cannot fit in the free memory.

The estimate is `sft-plan`'s (sft/plan_memory.py `peak_memory`) for the run's largest
micro-batch (the batching choice's `memory_rows`, capped by the samples there are), its engine,
precision, gradient checkpointing and loss implementation. It is compared, before the optimizer
exists, with what the device has free: `torch.cuda.mem_get_info` on a GPU, MemAvailable of
/proc/meminfo on CPU (shared by the processes of the node, so each needs its share), after
raising the estimate by `train.memory_margin` (the estimate's measured error, docs/performance.md
"Memory model", is up to 11% low). The weights are already loaded at that point and count as
resident.

`fitting_options` is the search behind both the refusal's advice and `sft-plan --fit`: the
micro-batch sizes (grad_accum raised to keep the batch), gradient checkpointing and loss
implementations that fit a budget, fewest changes first.

Invariant: `check_memory` returns only if the estimate plus its margin fits (or the check is off
or the free memory unknown); otherwise it
raises one UserError naming the estimate, the free memory and overrides that fit (or that none
does), before anything is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sft.errors import UserError
from sft.plan_memory import GIB, MemorySetup, ModelShape, peak_memory, state_memory


@dataclass(frozen=True)
class Option:
    """One way to run: micro-batch rows, grad_accum, checkpointing, loss impl, and its estimate."""

    micro_batch_size: int
    grad_accum: int
    checkpointing: bool
    loss_impl: str
    bytes: float

    def overrides(self, base: Option) -> str:
        parts = []
        if self.micro_batch_size != base.micro_batch_size:
            parts += [f"train.micro_batch_size={self.micro_batch_size}"]
            parts += [f"train.grad_accum={self.grad_accum}"]
        if self.checkpointing != base.checkpointing:
            parts += [f"model.gradient_checkpointing={str(self.checkpointing).lower()}"]
        if self.loss_impl != base.loss_impl:
            parts += [f"loss.impl={self.loss_impl}"]
        return " ".join(parts)


def free_memory_bytes(cuda: bool) -> float | None:
    """Free bytes of this process's device (None where it cannot be read)."""
    if cuda:
        import torch

        return float(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def fitting_options(
    shape: ModelShape,
    setup: MemorySetup,
    *,
    rows_of,
    micro_batch_size: int,
    grad_accum: int,
    checkpointing: bool,
    loss_impl: str,
    chunk_tokens: int,
    supervised_fraction: float,
    budget: float,
) -> tuple[Option, list[Option]]:
    """(this config's option, every option within `budget`, fewest changes and largest first).

    `rows_of(micro_batch_size)` gives (rows, tokens per row) of the largest micro-batch."""

    def option(mbs: int, gc: bool, impl: str) -> Option:
        rows, length = rows_of(mbs)
        accum = max(1, (micro_batch_size * grad_accum) // mbs)
        est = peak_memory(
            shape,
            setup,
            rows=rows,
            row_length=length,
            checkpointing=gc,
            supervised_fraction=supervised_fraction,
            loss_impl=impl,
            chunk_tokens=chunk_tokens,
            grad_accum=accum,
        )
        return Option(mbs, accum, gc, impl, est)

    base = option(micro_batch_size, checkpointing, loss_impl)
    sizes, m = [], micro_batch_size
    while m >= 1:
        sizes.append(m)
        m //= 2
    impls = [loss_impl] + (["chunked"] if loss_impl == "full" else [])
    found = [
        option(mbs, gc, impl)
        for mbs in sizes
        for gc in dict.fromkeys([checkpointing, True])
        for impl in impls
    ]
    fits = [o for o in found if o.bytes <= budget]

    def changes(o: Option) -> tuple:
        return (
            o.micro_batch_size != micro_batch_size,
            o.checkpointing != checkpointing,
            -o.micro_batch_size,
            o.loss_impl != loss_impl,
        )

    return base, sorted(fits, key=changes)


def check_memory(
    shape: ModelShape,
    setup: MemorySetup,
    *,
    rows_of,
    micro_batch_size: int,
    grad_accum: int,
    checkpointing: bool,
    loss_impl: str,
    chunk_tokens: int,
    supervised_fraction: float,
    free_bytes: float | None,
    processes_sharing: int = 1,
    margin: float = 0.0,
) -> float:
    """The estimated peak in bytes; raises UserError when the estimate x (1 + margin) cannot fit
    in `free_bytes`."""
    resident = state_memory(shape, setup).weights  # loaded before the check
    share = None if free_bytes is None else free_bytes / max(processes_sharing, 1) + resident
    base, fits = fitting_options(
        shape,
        setup,
        rows_of=rows_of,
        micro_batch_size=micro_batch_size,
        grad_accum=grad_accum,
        checkpointing=checkpointing,
        loss_impl=loss_impl,
        chunk_tokens=chunk_tokens,
        supervised_fraction=supervised_fraction,
        budget=share / (1 + margin) if share is not None else float("inf"),
    )
    if share is None or base.bytes * (1 + margin) <= share:
        return base.bytes
    rows, length = rows_of(micro_batch_size)
    advice = (
        f"try {fits[0].overrides(base)} (estimated {fits[0].bytes / GIB:.1f} GiB)"
        if fits
        else "no micro-batch size, checkpointing or loss setting fits: use a smaller "
        "data.max_length / collator.pack_length, more GPUs, or ZeRO-3 offload"
    )
    who = f" per process ({processes_sharing} share this machine)" if processes_sharing > 1 else ""
    plus = f" + {margin:.0%} margin (train.memory_margin)" if margin else ""
    raise UserError(
        f"this run needs about {base.bytes / GIB:.1f} GiB{who}{plus} at its peak (sft-plan's "
        f"estimate for micro-batches of {rows} x {length} tokens) but {share / GIB:.1f} GiB is "
        f"free: {advice}; or set train.memory_check=false to start anyway"
    )


def processes_on_this_machine(cuda: bool) -> int:
    """How many processes share this machine's free memory (1 per GPU on CUDA)."""
    return 1 if cuda else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def check_run_memory(cfg, engine, batching, data, loss_impl: str) -> float:
    """`check_memory` for a composed JobConfig on its engine, batching and prepared data."""
    import numpy as np

    from sft.plan_cli import setup_from_config
    from sft.plan_memory import resolve_shape

    m, t = cfg.model, cfg.train
    if not t.memory_check or len(data.train) == 0:
        return 0.0
    shape = resolve_shape(m.name_or_path, m.tiny_hidden_size, m.tiny_layers, m.tiny_vocab_size)
    zero = 3 if engine.kind.startswith("zero3") else 0
    setup = setup_from_config(engine.kind, zero, m.dtype, engine.world, None)
    lens = data.train[:, 2] - data.train[:, 1]
    longest, n, total = int(lens.max()), len(lens), int(lens.sum())

    def rows_of(mbs: int) -> tuple[int, int]:  # never more rows than the data can fill
        rows, length = batching.memory_rows(mbs, longest)
        return min(rows, n if length <= longest else -(-total // length)), length

    supervised = float(np.mean(data.tokens.targets != -100)) if len(data.tokens.targets) else 1.0
    return check_memory(
        shape,
        setup,
        rows_of=rows_of,
        micro_batch_size=t.micro_batch_size,
        grad_accum=t.grad_accum,
        checkpointing=m.gradient_checkpointing,
        loss_impl=loss_impl,
        chunk_tokens=cfg.loss.chunk_tokens,
        supervised_fraction=supervised,
        free_bytes=free_memory_bytes(engine.cuda),
        processes_sharing=processes_on_this_machine(engine.cuda),
        margin=t.memory_margin,
    )
