"""`varlen`: per-sample causal attention for packed rows, registered with transformers.

transformers' sdpa/eager paths isolate packed samples with a dense block-diagonal mask, so a
packed row of length L costs O(L^2) whatever its sample lengths. `varlen` computes every sample's
causal attention on its own from the collator's `cu_seq_lens_q/k`:
  - CUDA in fp16/bf16: `torch.nn.attention.varlen.varlen_attn` (a flash varlen kernel inside
    PyTorch),
  - CPU, fp32, attention dropout: causal `scaled_dot_product_attention`, short samples of similar
    length stacked into one call (right-padded to a bucket length, which the causal mask makes
    invisible to them), long ones one call each.
Without cu_seq_lens (a padding batch), it derives the samples from the 2-D attention mask
(left or right padding) and gives pad positions a zero output, so padding batches work too. Like
flash attention, it never makes transformers build a dense [L, L] mask.

A sliding-window model (the `sliding_window` keyword transformers passes) gets the same band
inside every sample.

Invariant: the output for every token equals plain causal attention over its own sample alone
(checked against single-sample runs in tests/models/test_attention.py).
"""

from __future__ import annotations

import functools
import inspect
import itertools

import torch
import torch.nn.functional as F

NAME = "varlen"
FLASH_DTYPES = (
    torch.float16,
    torch.bfloat16,
)  # what the CUDA varlen kernel takes; else per-sample sdpa


def _segments_from_mask(attention_mask: torch.Tensor, width: int) -> torch.Tensor:
    """cu_seqlens over the flattened rows from a padded 2-D mask (left or right padding).

    Each row's real tokens form one segment; the pads before and after them form their own.
    """
    m = attention_mask.bool()
    lens = m.sum(-1).tolist()
    starts = m.int().argmax(-1).tolist()
    segs = []
    for start, n in zip(starts, lens):
        for size in (start if n else 0, n, width - n - (start if n else 0)):
            if size > 0:
                segs.append(int(size))
    cu = torch.zeros(len(segs) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(segs).cumsum(0)
    return cu


@functools.cache
def _kernel_params() -> frozenset[str]:
    from torch.nn.attention.varlen import varlen_attn

    return frozenset(inspect.signature(varlen_attn).parameters)


def _cuda_varlen(q, k, v, cu, max_len, scale, window: int | None):
    from torch.nn.attention.varlen import varlen_attn

    params = _kernel_params()
    kwargs = {"scale": scale}
    if "window_size" in params:
        kwargs["window_size"] = (window - 1 if window else -1, 0)  # causal, optionally banded
    else:
        kwargs["is_causal"] = True
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        else:
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    cu = cu.to(device=q.device, dtype=torch.int32)
    return varlen_attn(q, k, v, cu, cu, max_len, max_len, **kwargs)


def _causal_sdpa(q, k, v, p: float, scale, window: int | None) -> torch.Tensor:
    """Causal attention of one segment, [1, H, n, D]; banded to `window` keys when set.

    4-D inputs matter: CPU sdpa runs its flash kernel on them, but falls back to the O(n^2)
    math kernel for 3-D ones (4-5x slower here).
    """
    gqa = q.shape[1] != k.shape[1]
    n = q.shape[2]
    if window is None or n <= window:
        return F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=p, scale=scale, enable_gqa=gqa
        )
    i = torch.arange(n, device=q.device)
    band = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=band, dropout_p=p, scale=scale, enable_gqa=gqa
    )


# Segments shorter than this are right-padded to a bucket length and batched; longer ones get
# a call of their own, at their exact length (their attention dominates; padding would cost).
BATCH_BELOW = 512


def _bucket_length(n: int) -> int:
    """Padded length of a short segment's bucket: n rounded up to 1/8 of its power of two.

    The padding stays under 1/8 of the segment (at least 16 positions per step), so a micro-batch
    of short samples needs a handful of attention calls instead of one per sample.
    """
    if n >= BATCH_BELOW:
        return n
    step = max(16, 1 << max(0, n.bit_length() - 4))
    return -(-n // step) * step


@functools.lru_cache(maxsize=16)
def _plan(bounds: tuple[int, ...], width: int, device: torch.device, batch: bool = True):
    """Per bucket (padded length m, [G, m] gather index into the flat B*L positions, the indices
    of its real positions among the G*m outputs), and the permutation that puts the buckets'
    concatenated real outputs back in position order. Cached: every layer of a forward asks
    with the same `cu_seq_lens`. `batch=False` gives every segment a bucket of its own, in order
    (attention dropout draws its masks per call: so a run with dropout keeps the random stream
    of one call per sample).

    A padded slot reads whatever follows its segment (clamped to the last position): under the
    causal mask no real query of the segment attends to it, and its output is never kept, so
    neither the forward values nor any gradient depends on it.
    """
    total = bounds[-1]
    groups: dict[int, list[tuple[int, int]]] = {}
    for a, b in itertools.pairwise(bounds):
        if b <= a:
            continue
        r = a // width
        if b - r * width > width:
            raise ValueError(f"a segment [{a}, {b}) crosses the end of row {r} (width {width})")
        key = _bucket_length(b - a) if batch else len(groups)
        groups.setdefault(key, []).append((a, b - a))
    buckets, dest = [], []
    for key, segs in sorted(groups.items()):
        m = key if batch else segs[0][1]
        starts = torch.tensor([a for a, _ in segs])
        index = (starts[:, None] + torch.arange(m)[None, :]).clamp_(max=total - 1)
        keep = torch.cat([torch.arange(n) + g * m for g, (_, n) in enumerate(segs)])
        buckets.append((m, index.to(device), keep.to(device)))
        dest.extend(torch.arange(a, a + n) for a, n in segs)
    order = torch.empty(total, dtype=torch.long)
    order[torch.cat(dest)] = torch.arange(total)
    return buckets, order.to(device)


def _per_segment(
    query, key, value, cu: torch.Tensor, p: float, scale, window: int | None
) -> torch.Tensor:
    """[B, H, L, D] -> [B, L, H, D]: causal attention inside every segment of every row.

    Segments (flat offsets in `cu`) never cross a row and cover every position. Segments of one
    bucket length are stacked into one [G, H, m, D] call (right-padded, see `_plan`), so the
    number of calls is the number of distinct buckets, not of samples (without dropout).
    """
    bsz, heads, width, dim = query.shape
    buckets, order = _plan(tuple(cu.tolist()), width, query.device, batch=p == 0.0)
    flat = [t.transpose(1, 2).reshape(bsz * width, t.shape[1], dim) for t in (query, key, value)]
    outs = []
    for _, index, keep in buckets:
        q, k, v = (t[index].transpose(1, 2) for t in flat)  # [G, H, m, D]
        o = _causal_sdpa(q, k, v, p, scale, window)
        outs.append(o.transpose(1, 2).reshape(-1, heads, dim)[keep])
    out = torch.cat(outs) if len(outs) > 1 else outs[0]
    return out[order].view(bsz, width, heads, dim)


def varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
):
    """transformers attention function: q/k/v [B, H, L, D] -> ([B, L, H, D], None)."""
    bsz, n_heads, width, head_dim = query.shape
    cu = kwargs.get("cu_seq_lens_q")
    max_len = kwargs.get("max_length_q")
    padded = cu is None and attention_mask is not None and attention_mask.dim() == 2
    if cu is None:
        if padded:
            cu = _segments_from_mask(attention_mask, width)
            max_len = int(cu.diff().max())
        else:  # plain causal attention, one sample per row
            cu = torch.arange(0, (bsz + 1) * width, width, dtype=torch.int32)
            max_len = width
    if not cu.is_cuda and int(cu[-1]) != bsz * width:  # checked on the host only: no device sync
        raise ValueError(
            f"cu_seq_lens cover {int(cu[-1])} positions but the batch has {bsz * width}"
        )
    p = dropout if module.training else 0.0
    window = kwargs.get("sliding_window")  # passed by sliding-window models (Mistral, Qwen2, ...)
    window = int(window) if window and int(window) < int(max_len) else None
    if (
        query.is_cuda
        and p == 0.0
        and query.dtype in FLASH_DTYPES
        and (window is None or "window_size" in _kernel_params())
    ):
        # [B, H, L, D] -> [B*L, H, D], the kernel's packed layout
        q, k, v = (
            t.transpose(1, 2).reshape(bsz * width, t.shape[1], head_dim)
            for t in (query, key, value)
        )
        out = _cuda_varlen(q, k, v, cu, int(max_len), scaling, window).view(
            bsz, width, n_heads, head_dim
        )
    else:
        out = _per_segment(query, key, value, cu, p, scaling, window)
    if padded:  # pad positions attend only to pads: give them a zero output
        out = out * attention_mask.reshape(bsz, width, 1, 1).to(out.dtype)
    return out.contiguous(), None


def register_varlen() -> None:
    """Make `attn_implementation="varlen"` available to every transformers model (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(NAME, varlen_attention_forward)
    # like flash attention: no dense mask is built; a 2-D padding mask (if any pad) is passed as is
    AttentionMaskInterface.register(NAME, flash_attention_mask)
