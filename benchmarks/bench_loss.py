"""Memory and speed of the loss: loss.impl=full vs chunked, through sft.loss.micro_batch_loss.

    python benchmarks/bench_loss.py [--rounds 3] [--json benchmarks/results/loss_cpu.json]

Two Llama-shaped models with random weights (no download), fp32 on CPU, one packed row per
micro-batch whose every position is a target (the worst case for the logits):

    head   2 layers, hidden 576, vocabulary 128,256 (Llama-3's), 4,096 targets: the loss dominates,
           so its peak memory and time are read almost alone
    smol   SmolLM2-135M's shape (30 layers, hidden 576, vocabulary 49,152), 2,048 targets: what a
           whole training step gains or loses

Each (model, impl) runs in its own process: build, one warm-up forward/backward (the weights'
gradients then exist), then `--iters` timed forward/backward passes. Peak memory = the process's
peak RSS minus its RSS before the first pass, minus the weights' gradients (allocated by the
first pass under either impl): what the loss and the activations add. The setups run
interleaved, `--rounds` times, and the record keeps each round's numbers and the min/median of
the chunked/full ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("layers", "hidden", "inter", "heads", "kv", "vocab", "targets")
MODELS = {
    "head": dict(zip(KEYS, (2, 576, 1536, 9, 3, 128_256, 4096), strict=True)),
    "smol": dict(zip(KEYS, (30, 576, 1536, 9, 3, 49_152, 2048), strict=True)),
}
IMPLS = ["full", "chunked"]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(model_key: str, impl: str, iters: int, chunk: int) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sft.loss import micro_batch_loss

    torch.manual_seed(0)
    m = MODELS[model_key]
    cfg = LlamaConfig(
        vocab_size=m["vocab"],
        hidden_size=m["hidden"],
        intermediate_size=m["inter"],
        num_hidden_layers=m["layers"],
        num_attention_heads=m["heads"],
        num_key_value_heads=m["kv"],
        max_position_embeddings=m["targets"] + 1,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(cfg).train()
    n = m["targets"]
    ids = torch.randint(0, m["vocab"], (1, n + 1))
    batch = {
        "input_ids": ids[:, :n],
        "position_ids": torch.arange(n)[None],
        "targets": ids[:, 1:],
        "seq_idx": torch.zeros(1, n, dtype=torch.long),
    }

    def fwd_bwd() -> float:
        loss, _ = micro_batch_loss(model, batch, "token", impl, chunk_tokens=chunk)
        (loss / n).backward()
        return float(loss) / n

    loss0 = fwd_bwd()  # warm-up: the weights' gradients now exist
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters())
    before = _rss_bytes()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fwd_bwd()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "model": model_key,
        "impl": impl,
        "chunk_tokens": chunk,
        "targets": n,
        "loss": loss0,
        "peak_extra_bytes": peak - before,
        "grad_bytes": grads,
        "seconds": statistics.median(times),
        "tokens_per_s": n / statistics.median(times),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--chunk-tokens", type=int, default=512)
    p.add_argument("--models", default="head,smol")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "loss_cpu.json"))
    p.add_argument("--child", nargs=2, metavar=("MODEL", "IMPL"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], a.iters, a.chunk_tokens)))
        return 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows, t_start = [], time.time()
    for r in range(a.rounds):
        for model_key in a.models.split(","):
            for impl in IMPLS if r % 2 == 0 else IMPLS[::-1]:  # alternate the order
                cmd = [sys.executable, __file__, "--child", model_key, impl]
                cmd += ["--iters", str(a.iters), "--chunk-tokens", str(a.chunk_tokens)]
                load = os.getloadavg()[0]
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1]) | {"round": r, "load": load}
                rows.append(row)
                mib = (row["peak_extra_bytes"] - 0) / 2**20
                print(
                    f"round {r} {model_key:4s} {impl:7s}: {row['tokens_per_s']:8.0f} tokens/s, "
                    f"peak +{mib:7.0f} MiB, loss {row['loss']:.6f}",
                    flush=True,
                )
    summary = {}
    for model_key in a.models.split(","):
        by = {
            impl: [x for x in rows if x["model"] == model_key and x["impl"] == impl]
            for impl in IMPLS
        }
        mem = [f["peak_extra_bytes"] / c["peak_extra_bytes"] for f, c in zip(*by.values())]
        speed = [c["tokens_per_s"] / f["tokens_per_s"] for f, c in zip(*by.values())]
        loss_diff = max(abs(f["loss"] - c["loss"]) for f, c in zip(*by.values()))
        summary[model_key] = {
            "full_over_chunked_peak_memory": {"min": min(mem), "median": statistics.median(mem)},
            "chunked_over_full_tokens_per_s": {
                "min": min(speed),
                "median": statistics.median(speed),
            },
            "max_loss_difference": loss_diff,
        }
        print(
            f"{model_key}: peak memory full/chunked median {statistics.median(mem):.2f}x "
            f"(min {min(mem):.2f}), tokens/s chunked/full median {statistics.median(speed):.3f} "
            f"(min {min(speed):.3f}), loss difference {loss_diff:.1e}"
        )
    record = {
        "command": "python " + " ".join(["benchmarks/bench_loss.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": os.cpu_count(),
        "wall_s": round(time.time() - t_start, 1),
        "rows": rows,
        "summary": summary,
    }
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
