"""Per-sample attention on CPU: one call per sample against bucketed calls (sft/models/attention.py).

    python benchmarks/bench_attention.py [--data flan_cot] [--packs 8] [--rounds 5] \
        [--threads 2] [--json benchmarks/results/attention_cpu.json]

The packs are real: the first `--samples` rows of the dataset tokenized by our pipeline and
packed by `collator=packing` (bfd, `--pack-length` tokens), so the segment lengths are the ones a
training step sees. For each micro-batch of `--packs` packs, random q/k/v of SmolLM2-135M's
attention shape (9 query heads, 3 key/value heads, head dim 64, fp32) go through forward and
backward of

    per_sample   one causal sdpa call per sample (the implementation before bucketing, kept
                 here as the baseline)
    bucketed     `sft.models.attention._per_segment`: short samples stacked per bucket length

`--layers` times per micro-batch (a forward of the model calls attention once per layer with the
same segments; the bucket plan is built once and cached, as in training). The two run
interleaved, `--rounds` times, in one process; the record keeps every round's seconds and the
median per_sample/bucketed ratio. Outputs and gradients of the two are compared first (must agree
to 1e-5 of their largest value). Run it once as it is and once under `taskset -c 0` (two threads on one core: the
contended case).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HEADS, KV, DIM = 9, 3, 64  # SmolLM2-135M


def per_sample(query, key, value, cu):
    """The baseline: every segment its own causal sdpa call, outputs concatenated per row."""
    import torch
    import torch.nn.functional as F

    width = query.shape[2]
    rows = [[] for _ in range(query.shape[0])]
    bounds = cu.tolist()
    for a, b in itertools.pairwise(bounds):
        if b <= a:
            continue
        r, s = divmod(a, width)
        e = b - r * width
        sl = (slice(r, r + 1), slice(None), slice(s, e))
        rows[r].append(
            F.scaled_dot_product_attention(
                query[sl], key[sl], value[sl], is_causal=True, enable_gqa=True
            )
        )
    return torch.cat([torch.cat(p, dim=2) for p in rows]).transpose(1, 2)


def pack_segments(args) -> list[list[list[int]]]:
    """Per micro-batch, per pack, the sample lengths of our packing plan (first epoch)."""
    from sft.cli_config import compose_job
    from sft.data.cli import load
    from sft.epochs import Epochs

    overrides = [
        f"data={args.data}",
        f"data.limit={args.samples}",
        "data.val_fraction=0",
        f"data.max_length={args.pack_length}",
        "collator=packing",
        f"collator.pack_length={args.pack_length}",
        f"train.micro_batch_size={args.packs}",
        "train.report_to=none",
    ]
    if args.dry_run:
        overrides.append("model=tiny")
    data = load(overrides).data
    cfg, _ = compose_job([*overrides, "run_dir=/tmp/sft-unused"])
    epochs = Epochs(
        cfg.collator.build(cfg.data.max_length),
        data.train,
        data.tokens.targets,
        micro_batch_size=args.packs,
        grad_accum=1,
        world_size=1,
        seed=0,
        epochs=1,
        max_steps=0,
    )
    out = []
    for step in epochs.plan(0).steps:
        for mb in step[0]:
            out.append([[b - a for a, b, _ in row] for row in mb])
    return out


def tensors(packs: list[list[int]], width: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    b = len(packs)
    q = torch.randn(b, HEADS, width, DIM, generator=g, requires_grad=True)
    k = torch.randn(b, KV, width, DIM, generator=g, requires_grad=True)
    v = torch.randn(b, KV, width, DIM, generator=g, requires_grad=True)
    cu = [0]
    for r, row in enumerate(packs):
        for n in row:
            cu.append(cu[-1] + n)
        if cu[-1] < (r + 1) * width:  # the pack's unused tail: one segment of its own
            cu.append((r + 1) * width)
    return q, k, v, torch.tensor(cu, dtype=torch.int32)


def run(fn, q, k, v, cu, layers: int) -> float:
    t = time.perf_counter()
    for _ in range(layers):
        out = fn(q, k, v, cu, 0.0, None, None) if fn.__name__ == "_per_segment" else fn(q, k, v, cu)
        out.sum().backward()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="flan_cot", help="a configs/data option")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--pack-length", type=int, default=1024)
    ap.add_argument("--packs", type=int, default=8, help="packs per micro-batch")
    ap.add_argument("--batches", type=int, default=8, help="micro-batches measured per round")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", nargs="?", const="benchmarks/results/attention_cpu.json")
    ap.add_argument("--dry-run", action="store_true", help="32 samples, 2 layers, 1 round")
    args = ap.parse_args()
    if args.dry_run:
        args.samples, args.layers, args.rounds, args.batches, args.data = 32, 2, 1, 2, "demo"
    import torch

    from sft.models.attention import _per_segment

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    batches = pack_segments(args)[: args.batches]
    segs = [n for mb in batches for row in mb for n in row]
    print(
        f"[bench] {len(batches)} micro-batches of {args.packs} packs x {args.pack_length}: "
        f"{len(segs)} samples, mean {statistics.mean(segs):.0f} tokens",
        flush=True,
    )
    worst_all = 0.0
    for i, mb in enumerate(batches):  # same outputs and gradients first
        grads = []
        for fn in (per_sample, _per_segment):
            q, k, v, cu = tensors(mb, args.pack_length, i)
            args_ = (q, k, v, cu, 0.0, None, None) if fn is _per_segment else (q, k, v, cu)
            out = fn(*args_)
            out.square().sum().backward()
            grads.append([out.detach(), q.grad, k.grad, v.grad])
        worst = max(
            ((a - b).abs().max() / b.abs().max()).item() for a, b in zip(*grads, strict=True)
        )
        worst_all = max(worst_all, worst)
        if worst > 1e-5:
            raise SystemExit(
                f"micro-batch {i}: bucketed differs from per-sample by {worst:.2e} (relative)"
            )
    fns = {"per_sample": per_sample, "bucketed": _per_segment}
    rounds = []
    for r in range(args.rounds):
        order = list(fns) if r % 2 == 0 else list(fns)[::-1]
        secs = dict.fromkeys(fns, 0.0)
        for i, mb in enumerate(batches):
            for name in order:
                q, k, v, cu = tensors(mb, args.pack_length, i)
                secs[name] += run(fns[name], q, k, v, cu, args.layers)
        secs["ratio"] = secs["per_sample"] / secs["bucketed"]
        rounds.append(secs)
        print(f"[bench] round {r + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in secs.items()))
    ratios = [x["ratio"] for x in rounds]
    record = {
        "command": " ".join(sys.argv),
        "machine": {
            "platform": platform.platform(),
            "cpus_allowed": len(os.sched_getaffinity(0)),
            "threads": args.threads,
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
        },
        "torch": torch.__version__,
        "data": args.data,
        "samples": len(segs),
        "mean_sample_tokens": statistics.mean(segs),
        "pack_length": args.pack_length,
        "packs_per_micro_batch": args.packs,
        "layers": args.layers,
        "max_relative_difference": worst_all,
        "rounds": rounds,
        "ratio_min": min(ratios),
        "ratio_median": statistics.median(ratios),
    }
    print(
        f"[bench] per_sample / bucketed seconds: median {record['ratio_median']:.2f}x "
        f"(min {record['ratio_min']:.2f}x)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
