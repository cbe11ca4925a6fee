"""`sft-plan`: per-GPU memory and optimizer steps per epoch of a run, before it is launched.

    sft-plan experiment=paper_llama3_8b --no-data              # memory only (shapes built in)
    sft-plan experiment=paper_llama3_8b data.path=/data/tulu.jsonl --tokenizer /models/llama3
    sft-plan model=smollm2_135m data=lima collator=packing --gpus 8 --zero-stage 2

The arithmetic is sft/plan_memory.py; this file composes the trainer's config, loads the data
exactly as the trainer does (same tokenizer call, same chat template) and prints the tables.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from sft.batching import padding_and_packing
from sft.data.targets import count_targets
from sft.errors import UserError, exit_on_user_error
from sft.loss import resolve_impl
from sft.plan_memory import GIB, MemorySetup, ModelShape, resolve_shape
from sft.plan_steps import epoch_estimate, train_flops
from sft.plan_tables import fit_table, memory_table, parse_budget

# ----------------------------------------------------------------------------------- CLI
ENGINE_OF_DISTRIBUTED = {
    "auto": "plain",  # sft-plan plans what --gpus / --zero-stage say
    "single": "plain",
    "ddp": "plain",
    "zero3": "deepspeed",
    "zero3_offload": "deepspeed",
    "fsdp2": "fsdp2",
}


def setup_from_config(
    distributed: str, zero_stage: int, dtype: str, gpus: int, offload: str | None
) -> MemorySetup:
    """The MemorySetup a `distributed=` choice implies; `offload` (none|optimizer|params|both) overrides."""
    engine = ENGINE_OF_DISTRIBUTED[distributed]
    stage = zero_stage if engine == "deepspeed" else (3 if engine == "fsdp2" else 0)
    if offload is None:
        offload = "both" if distributed == "zero3_offload" else "none"
    return MemorySetup(
        gpus=gpus,
        zero_stage=stage,
        engine=engine,
        dtype=dtype,
        offload_optimizer=offload in ("optimizer", "both"),
        offload_params=offload in ("params", "both"),
    )


def _gib(x: float) -> str:
    return f"{x / GIB:,.1f}" if x >= 0.05 * GIB or x == 0 else f"{x / GIB:,.3f}"


def _duration(hours: float) -> str:
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} s"
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:,.1f} h"


def steps_table(
    shape: ModelShape,
    data,
    gpus: int,
    micro_batch_size: int,
    grad_accum: int,
    epochs: float,
    own,
    batch_by: str,
    step_budget: int,
    seed: int,
    supervised: int,
    peak_tflops: float,
    mfu: float,
):
    """The rich table of optimizer steps per epoch for padding and every packing strategy."""
    from rich.table import Table

    from sft.batching import comparison

    capacity = own.capacity
    lens = data.train[:, 2] - data.train[:, 1]
    table = Table(
        title=f"Optimizer steps per epoch: {len(lens):,} samples, {int(lens.sum()):,} tokens "
        f"({supervised:,} supervised), longest {int(lens.max())}, pack length {capacity}",
        caption=f"* = this config; efficiency = real / computed tokens (rows padded to the longest row of "
        f"their micro-batch); time at {mfu:.0%} of {peak_tflops:g} TFLOP/s on {gpus} GPU(s)"
        + (f"; steps of ~{step_budget} {batch_by} (train.batch_by)" if batch_by != "rows" else ""),
    )
    for col in (
        "collator",
        "rows",
        "steps/epoch",
        f"steps x {epochs:g} ep",
        "computed tokens",
        "efficiency",
        "time/epoch",
        "dropped",
    ):
        table.add_column(col, justify="left" if col == "collator" else "right")
    for batching in comparison(own):
        est = epoch_estimate(
            data.train,
            data.tokens.targets,
            batching,
            micro_batch_size=micro_batch_size,
            grad_accum=grad_accum,
            gpus=gpus,
            seed=seed,
            batch_by=batch_by,
            step_budget=step_budget,
        )
        hours = (
            train_flops(shape, est.computed_tokens, supervised, est.attention_sq)
            / (gpus * peak_tflops * 1e12 * mfu)
            / 3600
        )
        here = "*" if batching.describe() == own.describe() else ""
        table.add_row(
            f"{here}{est.label}",
            f"{est.rows:,}",
            f"{est.steps:,}",
            f"{round(est.steps * epochs):,}",
            f"{est.computed_tokens:,}",
            f"{est.efficiency:.1%}",
            _duration(hours),
            f"{est.dropped:,}",
        )
    return table


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sft-plan", description=__doc__.split("\n")[0])
    p.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides, as for sft-train (experiment=..., collator=...)",
    )
    p.add_argument(
        "--gpus",
        type=int,
        default=0,
        help="GPUs in the run (default: distributed.expect_processes, else 1)",
    )
    p.add_argument(
        "--gpus-per-node",
        type=int,
        default=8,
        help="GPUs per node, for CPU RAM per node under offload",
    )
    p.add_argument(
        "--gpu-memory-gib",
        type=float,
        default=80.0,
        help="memory of one GPU, to flag what does not fit",
    )
    p.add_argument(
        "--zero-stage",
        type=int,
        default=None,
        help="override the ZeRO stage (0-3; DeepSpeed semantics)",
    )
    p.add_argument(
        "--offload",
        choices=("none", "optimizer", "params", "both"),
        default=None,
        help="override CPU offload (default: both for distributed=zero3_offload, else none)",
    )
    p.add_argument(
        "--no-data", action="store_true", help="skip the dataset: memory only, worst-case lengths"
    )
    p.add_argument(
        "--tokenizer",
        default="",
        help="tokenizer to measure lengths with (default: model.name_or_path)",
    )
    p.add_argument(
        "--lengths-from",
        default="",
        metavar="RUN_DIR",
        help="measure the data of an earlier run: its config.yaml's data and model sections",
    )
    p.add_argument(
        "--fit",
        default="",
        metavar="BUDGET",
        help="list the micro-batch sizes, checkpointing and loss settings that fit BUDGET per "
        "GPU (e.g. 24GiB, 80GB, 40 = GiB)",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="dense bf16 TFLOP/s of one GPU (H100 SXM: 989)",
    )
    p.add_argument(
        "--mfu", type=float, default=0.4, help="fraction of peak reached, for the time estimate"
    )
    return p


def _load_lengths(data_cfg, model_cfg, seed: int):
    from sft.data.dataset import prepare_data
    from sft.models.build import load_tokenizer

    return prepare_data(load_tokenizer(model_cfg), data_cfg, seed, progress=False)


def _run_config(run_dir: str):
    from sft.config import job_config_from_yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(
            f"--lengths-from {run_dir}: no config.yaml there (pass a run directory of sft-train)"
        )
    return job_config_from_yaml(path)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    """Print the memory and steps tables for a training config."""
    from rich.console import Console

    from sft.cli_config import compose_job

    ns = _parser().parse_intermixed_args(argv)
    overrides = list(ns.overrides)
    if not any(o.startswith("run_dir=") for o in overrides):
        overrides.append("run_dir=sft-plan")
    cfg, _ = compose_job(overrides)
    m, t, c = cfg.model, cfg.train, cfg.collator
    gpus = ns.gpus or cfg.distributed.expect_processes or 1
    setup = setup_from_config(
        cfg.distributed.name, cfg.distributed.zero_stage, m.dtype, gpus, ns.offload
    )
    if ns.zero_stage is not None:
        setup = replace(
            setup, zero_stage=ns.zero_stage, engine="deepspeed" if ns.zero_stage else setup.engine
        )
    shape = resolve_shape(m.name_or_path, m.tiny_hidden_size, m.tiny_layers, m.tiny_vocab_size)
    own = c.build(cfg.data.max_length)

    data = None
    if not ns.no_data:
        data_cfg, model_cfg = cfg.data, m
        if ns.lengths_from:
            run_cfg = _run_config(ns.lengths_from)
            data_cfg, model_cfg = run_cfg.data, run_cfg.model
        if ns.tokenizer:
            model_cfg = replace(model_cfg, name_or_path=ns.tokenizer)
        try:
            data = _load_lengths(data_cfg, model_cfg, cfg.seed)
        except UserError as e:
            raise UserError(
                f"{e} (plan memory only with --no-data, or measure lengths with --tokenizer PATH)"
            ) from None

    if data is not None:
        lens = data.train[:, 2] - data.train[:, 1]
        longest = int(lens.max())
        supervised = sum(count_targets(data.tokens.targets, a, b) for _, a, b in data.train)
        sup_frac = supervised / max(int(lens.sum()), 1)
    else:
        longest, sup_frac, supervised = cfg.data.max_length, 1.0, 0

    con = Console(width=None if sys.stdout.isatty() else 132)
    con.print(
        f"[bold]{shape.name}[/]: {shape.num_params() / 1e9:.3f} B params, {shape.num_layers} layers, "
        f"hidden {shape.hidden_size}, heads {shape.num_heads}/{shape.num_kv_heads} kv, vocab {shape.vocab_size}"
    )
    off = (
        "+".join(
            k
            for k, v in (("optimizer", setup.offload_optimizer), ("params", setup.offload_params))
            if v
        )
        or "none"
    )
    con.print(
        f"{setup.gpus} GPU(s), engine {setup.engine}, ZeRO stage {setup.zero_stage}, offload {off}, "
        f"{m.dtype}; micro-batch {t.micro_batch_size} x grad_accum {t.grad_accum} x {setup.gpus} GPUs "
        f"= global batch {t.micro_batch_size * t.grad_accum * setup.gpus}"
    )
    choices, mine = padding_and_packing(c, cfg.data.max_length)
    con.print(
        memory_table(
            shape,
            setup,
            m.dtype,
            t.micro_batch_size,
            longest,
            choices,
            sup_frac,
            (mine, m.gradient_checkpointing),
            ns.gpu_memory_gib,
            ns.gpus_per_node,
            resolve_impl(cfg.loss.impl, shape.vocab_size),
            cfg.loss.chunk_tokens,
            t.grad_accum,
        )
    )
    if ns.fit:  # what fits a memory budget (sft/plan_fit.py)
        impl = resolve_impl(cfg.loss.impl, shape.vocab_size)
        fit = (shape, setup, own, longest, sup_frac, t, m.gradient_checkpointing, impl)
        con.print(fit_table(*fit, cfg.loss.chunk_tokens, parse_budget(ns.fit)))
    if data is None:
        con.print("steps per epoch: skipped (--no-data)")
        return 0
    con.print(
        steps_table(
            shape,
            data,
            setup.gpus,
            t.micro_batch_size,
            t.grad_accum,
            t.epochs,
            own,
            t.batch_by,
            t.step_budget,
            cfg.seed,
            supervised,
            ns.peak_tflops,
            ns.mfu,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
