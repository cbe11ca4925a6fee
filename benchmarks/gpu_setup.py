"""One bench setup of benchmarks/gpu_check.py, in a process of its own: the trainer's Recipe on
a random Llama-shaped model and synthetic rows, timed step by step.

    python benchmarks/gpu_setup.py SPEC.json      # started by gpu_check.py, one per setup

SPEC holds the setup's sft-train overrides, the model shape, the data sizes, the modules to make
unimportable and where to write the result. The config is composed as sft-train composes it
(`sft.cli_config.compose_job`), the Recipe is built and its own `train_step` runs every optimizer
step of its epoch plan (its collator, attention, loss and optimizer, bf16 autocast over fp32
master weights); only two inputs are replaced, during the Recipe's construction alone:

    model   `random_model_builder(shape)` for `sft.build.build_model`: a LlamaConfig of `shape`
            with random weights, built on the engine's device (no download)
    data    `synthetic_data(...)` for `sft.data.dataset.prepare_data`: seeded lognormal lengths
            (mean about 670 tokens) clipped to [32, max_length], the first 10-60 % of each row
            untrained like a prompt, laid out as prepare_data lays it out (no `datasets`)

The result JSON is rewritten after every step (a run stopped at its timeout keeps its steps):
per step its seconds (synchronised), counts, loss, and what the collated micro-batches computed
(positions, causal attention pairs inside the samples and over the computed rows), plus the
peak memory (`sft.run_log.peak_memory_mb`: CUDA max allocated, else peak RSS) and which varlen
path ran (torch's CUDA kernel or one sdpa call per sample). `step_flops` turns those into FLOPs.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """A Llama-shaped causal LM, built with random weights from a transformers LlamaConfig."""

    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    tie_word_embeddings: bool
    rope_theta: float = 500000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


# the shape of Llama-3.2-1B (1.24 B parameters, 0.97 B of them outside the tied embedding)
LLAMA_1B = ModelShape("llama-1b-random", 128256, 2048, 8192, 16, 32, 8, True)
TINY = ModelShape("llama-tiny-random", 4096, 64, 128, 2, 4, 2, False)


def step_flops(
    shape: dict,
    *,
    real: int,
    positions: int,
    pairs: float,
    computed_pairs: float,
    targets: int,
    gc: bool,
    chunked: bool,
) -> tuple[float, float]:
    """(model FLOPs the step needed, FLOPs it computed) of one optimizer step.

    real / positions: real tokens / positions computed (pads included); pairs / computed_pairs:
    causal (query, key) pairs inside every real sample / over every row or segment computed.
    """
    linear = (8.0 if gc else 6.0) * shape["non_embedding_params"]
    attn = (16.0 if gc else 12.0) * shape["num_layers"] * shape["num_heads"] * shape["head_dim"]
    head = (8.0 if chunked else 6.0) * shape["hidden_size"] * shape["vocab_size"] * targets
    return linear * real + attn * pairs + head, linear * positions + attn * computed_pairs + head


def synthetic_data(n: int, max_length: int, vocab: int, seed: int):
    """PreparedData as `sft.data.dataset.prepare_data` lays it out, of synthetic rows: seeded
    lognormal lengths (mean about 670 tokens) clipped to [32, max_length], the first 10-60 % of
    each row untrained (a prompt), random token ids; targets made by `row_targets`."""
    import numpy as np

    from sft.data.dataset import DataReport, PreparedData, TokenArrays
    from sft.data.targets import row_targets

    rng = np.random.default_rng(seed)
    lengths = np.clip(np.rint(rng.lognormal(6.04, 1.0, n)), 32, max_length).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(offsets[-1])
    ids = rng.integers(0, vocab, total, dtype=np.int64).astype(np.int32)
    prompt = np.floor(lengths * rng.uniform(0.1, 0.6, n)).astype(np.int64)
    position = np.arange(total) - np.repeat(offsets[:-1], lengths)
    mask = position >= np.repeat(prompt, lengths)
    tokens = TokenArrays(
        ids=ids,
        mask=mask,
        targets=row_targets(ids, mask, offsets),
        offsets=offsets,
        row_ids=[f"synthetic[{i}]" for i in range(n)],
    )
    pieces = np.stack([np.arange(n), offsets[:-1], offsets[1:]], axis=1).astype(np.int64)
    report = DataReport(rows_read=n)
    report.counts["train_pieces"] = n
    report.counts["val_pieces"] = 0
    return PreparedData(tokens=tokens, train=pieces, val=np.zeros((0, 3), np.int64), report=report)


def random_model_builder(shape: ModelShape):
    """A stand-in for `sft.build.build_model`: the Llama-shaped model of `shape` with random
    weights, built on the engine's device, with what `sft.models.build.load_model` sets (use_cache
    off, the chosen attention, gradient checkpointing when asked) and the framework's precision
    rule (fp32 master weights under bf16 autocast)."""

    def build(m, *, engine, attn: str, vocab_size: int, seed: int):
        import torch
        from transformers import AutoModelForCausalLM, LlamaConfig

        from sft.models.attention import register_varlen

        register_varlen()
        config = LlamaConfig(
            vocab_size=shape.vocab_size,
            hidden_size=shape.hidden_size,
            intermediate_size=shape.intermediate_size,
            num_hidden_layers=shape.num_layers,
            num_attention_heads=shape.num_heads,
            num_key_value_heads=shape.num_kv_heads,
            head_dim=shape.head_dim,
            max_position_embeddings=8192,
            rope_theta=shape.rope_theta,
            tie_word_embeddings=shape.tie_word_embeddings,
            use_cache=False,
        )
        torch.manual_seed(seed)
        with torch.device(engine.accelerator.device):
            model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
        model = model.float()
        model.config.use_cache = False
        if m.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        return model

    return build


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def child(spec_path: Path) -> int:
    """Train one setup for warmup + steps optimizer steps; results written after every step."""
    spec = json.loads(spec_path.read_text())
    for m in spec["block"]:
        sys.modules[m] = None  # absent, as on the GPU machine
    sys.path.insert(0, str(ROOT))
    out = Path(spec["result"])
    result: dict[str, Any] = {"steps": []}
    try:
        return _train_setup(spec, result, lambda: write_json(out, result))
    except BaseException as e:  # noqa: BLE001 - every failure is recorded, then re-raised as a code
        import traceback

        oom = type(e).__name__ in ("OutOfMemoryError", "MemoryError")
        result["error"] = ("out of memory: " if oom else "") + f"{type(e).__name__}: {e}"[:500]
        result["traceback"] = traceback.format_exc().splitlines()[-12:]
        write_json(out, result)
        return 4 if oom else 1


def _train_setup(spec: dict, result: dict, write) -> int:
    import torch

    from sft import trainer
    from sft.cli_config import compose_job
    from sft.models import attention
    from sft.run_log import peak_memory_mb

    t_start = time.perf_counter()
    cfg, yaml = compose_job(spec["overrides"])
    shape = ModelShape(**spec["model"])
    calls = {"cuda_varlen": 0, "per_segment_sdpa": 0}

    def counted(name: str, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    # which varlen path ran: torch's CUDA varlen kernel, or one sdpa call per sample
    attention._cuda_varlen = counted("cuda_varlen", attention._cuda_varlen)
    attention._per_segment = counted("per_segment_sdpa", attention._per_segment)
    data = synthetic_data(spec["samples"], spec["max_length"], shape.vocab_size, cfg.seed)
    real_prepare, real_build = trainer.prepare_data, trainer.build_model
    trainer.prepare_data = lambda *a, **k: data
    trainer.build_model = random_model_builder(shape)
    try:
        recipe = trainer.Recipe(cfg, yaml)
    finally:
        trainer.prepare_data, trainer.build_model = real_prepare, real_build
    try:
        cuda = recipe.engine.cuda
        model = recipe.acc.unwrap_model(recipe.model)
        params = {id(p): p for p in model.parameters()}
        embedding = {
            id(p) for n, p in model.named_parameters() if "embed_tokens" in n or "lm_head" in n
        }
        loss_cfg = getattr(cfg, "loss", None)
        result |= {
            "attn": recipe.attn,
            "engine": recipe.engine.kind,
            "device": str(recipe.acc.device),
            "mixed_precision": str(recipe.acc.mixed_precision),
            "loss_impl_config": str(getattr(loss_cfg, "impl", "")) or None,  # as asked
            "loss_impl": str(getattr(recipe, "loss_impl", "")) or None,  # as resolved (auto)
            "gradient_checkpointing": bool(cfg.model.gradient_checkpointing),
            "pack_efficiency": recipe.epochs.plan(0).pack_efficiency,
            "shape": dataclasses.asdict(shape)
            | {
                "head_dim": shape.head_dim,
                "params": sum(p.numel() for p in params.values()),
                "non_embedding_params": sum(
                    p.numel() for k, p in params.items() if k not in embedding
                ),
            },
            "setup_s": time.perf_counter() - t_start,
        }
        stats: list[dict] = []
        collate = recipe.collate

        def measured_collate(rows, tokens):
            batch, meta = collate(rows, tokens)
            ids = batch["input_ids"]
            real = [b - a for row in rows for a, b, _ in row]
            cu = batch.get("cu_seq_lens_q")
            if cu is not None:  # attention per segment (pad segments included)
                computed = sum(n * (n + 1) / 2 for n in torch.diff(cu.cpu()).tolist())
            else:  # attention over the whole (padded) row
                computed = ids.shape[0] * ids.shape[1] * (ids.shape[1] + 1) / 2
            stats.append(
                {
                    "positions": int(ids.numel()),
                    "pairs": sum(n * (n + 1) / 2 for n in real),
                    "computed_pairs": computed,
                }
            )
            return batch, meta

        recipe.collate = measured_collate
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        recipe.model.train()
        write()
        while recipe.step < recipe.total_steps:
            epoch, idx = recipe.epochs.locate(recipe.step)
            plan = recipe.epochs.plan(epoch)
            stats.clear()
            sync()
            t0 = time.perf_counter()
            r = recipe.train_step(plan.steps[idx])
            sync()
            seconds = time.perf_counter() - t0
            recipe.step += 1
            recipe.log.step(recipe.step, r, round(epoch + (idx + 1) / len(plan), 4), plan, seconds)
            result["steps"].append(
                {
                    "step": recipe.step,
                    "warmup": recipe.step <= spec["warmup"],
                    "seconds": seconds,
                    "loss": r.loss,
                    "grad_norm": r.grad_norm,
                    "finite": r.finite,
                    "samples": r.counts.samples,
                    "tokens": r.counts.tokens,
                    "pad_tokens": r.counts.pads,
                    "targets": r.counts.targets,
                    "micro_batches": len(stats),
                    "positions": sum(s["positions"] for s in stats),
                    "pairs": sum(s["pairs"] for s in stats),
                    "computed_pairs": sum(s["computed_pairs"] for s in stats),
                }
            )
            result["peak_memory_mib"] = round(peak_memory_mb(cuda), 1)
            if cuda:
                result["peak_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
            result["attention_calls"] = dict(calls)
            write()
    finally:
        recipe.log.close()
        recipe.close()
    return 0


if __name__ == "__main__":
    sys.exit(child(Path(sys.argv[1])))
