"""The tables `sft-plan` prints about memory: per component, and (`--fit BUDGET`) what fits.

`memory_table`: weights, gradients, optimizer states, gathered unit, activations and loss per
GPU for padding and packing, gradient checkpointing off and on. `fit_table`: the micro-batch
sizes, checkpointing and loss settings within a budget, from sft/memory_check.py's
`fitting_options` (the start-up memory check gives the same advice).

Invariant: every number comes from sft/plan_memory.py; every `--fit` row is within the budget,
fewest changes from the config first.
"""

from __future__ import annotations

from sft.errors import UserError
from sft.plan_memory import (
    GIB,
    MemorySetup,
    ModelShape,
    activation_memory,
    bytes_per_param,
    grads_at_peak,
    logits_memory,
    state_memory,
    step_total,
)


def parse_budget(text: str) -> float:
    """Bytes of "24GiB", "80GB", "512MiB" or a plain number of GiB."""
    units = {"gib": GIB, "gb": 1e9, "mib": 2**20, "mb": 1e6, "": GIB}
    t = text.strip().lower().replace(" ", "")
    number = t.rstrip("abgimk")
    try:
        return float(number) * units[t[len(number) :]]
    except (KeyError, ValueError):
        raise UserError(f"--fit {text!r}: give a size like 24GiB, 80GB or 40 (GiB)") from None


def fit_table(
    shape, setup, batching, longest, supervised_fraction, t, checkpointing, impl, chunk, budget
):
    """The settings that fit `budget` per GPU, fewest changes first (sft/memory_check.py)."""
    from rich.table import Table

    from sft.memory_check import fitting_options

    base, fits = fitting_options(
        shape,
        setup,
        rows_of=lambda mbs: batching.memory_rows(mbs, longest),
        micro_batch_size=t.micro_batch_size,
        grad_accum=t.grad_accum,
        checkpointing=checkpointing,
        loss_impl=impl,
        chunk_tokens=chunk,
        supervised_fraction=supervised_fraction,
        budget=budget,
    )
    table = Table(
        title=f"Settings that fit {budget / GIB:.1f} GiB per GPU (this config: "
        f"{base.bytes / GIB:.1f} GiB)",
        caption="none fits: fewer tokens per row, more GPUs or offload" if not fits else None,
    )
    for col in ("overrides", "micro-batch x accum", "checkpointing", "loss", "GiB"):
        table.add_column(col, justify="left" if col == "overrides" else "right")
    for o in fits[:8]:
        table.add_row(
            o.overrides(base) or "(as configured)",
            f"{o.micro_batch_size} x {o.grad_accum}",
            "on" if o.checkpointing else "off",
            o.loss_impl,
            f"{o.bytes / GIB:.1f}",
        )
    return table


def _gib(x: float) -> str:
    return f"{x / GIB:,.1f}" if x >= 0.05 * GIB or x == 0 else f"{x / GIB:,.3f}"


def memory_table(
    shape: ModelShape,
    setup: MemorySetup,
    dtype: str,
    micro_batch_size: int,
    longest: int,
    choices: list,
    supervised_fraction: float,
    mine: tuple[int, bool],
    gpu_memory_gib: float,
    gpus_per_node: int,
    loss_impl: str = "full",
    chunk_tokens: int = 512,
    grad_accum: int = 1,
):
    """The rich table of memory per GPU for padding/packing x gradient checkpointing off/on.

    `choices` are the (padding, packing) batchings to compare (sft.batching.padding_and_packing);
    `mine` = (index of this config's choice, its gradient checkpointing)."""
    from rich.table import Table

    state = state_memory(shape, setup)
    names = [b.describe()["collator"] for b in choices]
    shapes = [b.memory_rows(micro_batch_size, longest) for b in choices]
    cols = [(k, gc) for k in range(len(choices)) for gc in (False, True)]
    table = Table(
        title="Memory per GPU (GiB)",
        caption=f"* = this config; (over) = more than {gpu_memory_gib:g} GiB "
        "(--gpu-memory-gib); not counted: CUDA context, allocator slack, comm buffers",
    )
    table.add_column("component")
    table.add_column("B/param", justify="right")
    for k, gc in cols:
        rows, length = shapes[k]
        table.add_column(
            f"{'*' if (k, gc) == mine else ''}{names[k]} {rows}x{length}\nGC {'on' if gc else 'off'}",
            justify="right",
        )
    wb, gb, ob = bytes_per_param(setup.engine, setup.dtype)
    on_cpu = {
        "weights": setup.offload_params,
        "gradients": setup.offload_optimizer,
        "optimizer states": setup.offload_optimizer,
    }
    live = grads_at_peak(setup, grad_accum)
    for label, value, per in (
        ("weights", state.weights, wb),
        ("gradients" + ("" if live else " (made after the loss peak)"), state.grads, gb),
        ("optimizer states", state.optimizer, ob),
        ("gathered unit (ZeRO-3)", state.gathered, ""),
    ):
        table.add_row(
            label + (" (on CPU)" if on_cpu.get(label) else ""), str(per), *[_gib(value)] * len(cols)
        )
    acts = [activation_memory(shape, *shapes[k], dtype, gc, setup.engine) for k, gc in cols]
    logits = [
        logits_memory(shape, *shapes[k], dtype, supervised_fraction, loss_impl, chunk_tokens)
        for k, _ in cols
    ]
    table.add_row("activations", "", *map(_gib, acts))
    table.add_row(
        f"loss {loss_impl} ({supervised_fraction:.0%} supervised)", "", *map(_gib, logits)
    )
    totals = [step_total(state, a, lg, live) for a, lg in zip(acts, logits)]
    table.add_row(
        "[bold]total GPU[/]",
        "",
        *[(f"[red]{_gib(x)} (over)[/]" if x > gpu_memory_gib * GIB else _gib(x)) for x in totals],
    )
    if state.cpu:
        table.add_row(
            f"CPU RAM per GPU (x{gpus_per_node}/node)",
            "",
            *[f"{_gib(state.cpu)} ({_gib(state.cpu * gpus_per_node)})"] * len(cols),
        )
    return table
