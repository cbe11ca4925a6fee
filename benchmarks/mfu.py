"""Model FLOPs utilisation of a measured training run on CPU.

    MFU = model FLOPs of the run's real tokens / wall seconds / the machine's measured peak

Model FLOPs are `sft.plan_steps.train_flops` for what the run had to compute to train its real
tokens: 6 x body weights x real tokens, the LM head at supervised positions only (the loss keeps
only those), and causal attention within every sample (6 x layers x q x sum of squared sample
lengths). Pads, and attention across the samples of a packed row, are work a setup chooses to do
and are not counted: a setup that computes them has a lower MFU for the same wall time, which is
the point of the comparison. There is no datasheet peak for a shared CPU, so the peak is
measured: the best of several fp32 matrix products (2,048 x 2,048) at the run's thread count,
taken in the same benchmark run, before and after its training runs (the better of the two: one
measurement once landed in a slow moment of the shared machine, 127 against 190 GFLOP/s).

Invariant: every run of one record is divided by the same peak, so MFU ratios between setups
equal their ratios of model FLOPs per second.
"""

from __future__ import annotations

import time


def gemm_peak_flops(threads: int, n: int = 2048, repeats: int = 8) -> float:
    """The best fp32 matmul FLOP/s of this machine at `threads` torch threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return 2 * n**3 / best


def model_flops(shape, steps: list[dict]) -> float:
    """Model FLOPs of `steps` (each: `rows` of sample lengths, `supervised_tokens`)."""
    from sft.plan_steps import train_flops

    real = sum(n for s in steps for row in s["rows"] for n in row)
    attention_sq = sum(n * n for s in steps for row in s["rows"] for n in row)
    supervised = sum(s["supervised_tokens"] for s in steps)
    return train_flops(shape, real, supervised, attention_sq)


def mfu(shape, steps: list[dict], wall_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation of `steps` trained in `wall_s` seconds."""
    return model_flops(shape, steps) / wall_s / peak_flops
