"""`varlen`: per-sample causal attention for packed rows, registered with transformers.

transformers' sdpa/eager paths isolate packed samples with a dense block-diagonal mask, so a
packed row of length L costs O(L^2) whatever its sample lengths. `varlen` computes every sample's
causal attention on its own from the collator's `cu_seq_lens_q/k`:
  - CUDA: `torch.nn.attention.varlen.varlen_attn` (a flash varlen kernel inside PyTorch),
  - CPU and anything else: one causal `scaled_dot_product_attention` call per sample.
Without cu_seq_lens (a padding batch), it derives the samples from the 2-D attention mask
(right padding) and leaves pad positions at zero, so padding batches work too.

Invariant: the output for every token equals plain causal attention over its own sample alone
(checked against single-sample runs in tests/models/test_attention.py).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

NAME = "varlen"


def _segments_from_mask(attention_mask: torch.Tensor, width: int) -> torch.Tensor:
    """cu_seqlens over the flattened rows from a right-padded 2-D mask (pads form their own segments)."""
    lens = attention_mask.sum(-1).tolist()
    segs = []
    for n in lens:
        segs.append(int(n))
        if n < width:
            segs.append(width - int(n))
    cu = torch.zeros(len(segs) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(segs).cumsum(0)
    return cu


def _cuda_varlen(q, k, v, cu, max_len, scale):
    from torch.nn.attention.varlen import varlen_attn

    params = inspect.signature(varlen_attn).parameters
    kwargs = {"scale": scale}
    if "window_size" in params:
        kwargs["window_size"] = (-1, 0)
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


def varlen_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                             value: torch.Tensor, attention_mask: torch.Tensor | None,
                             scaling: float | None = None, dropout: float = 0.0, **kwargs):
    """transformers attention function: q/k/v [B, H, L, D] -> ([B, L, H, D], None)."""
    bsz, n_heads, width, head_dim = query.shape
    cu = kwargs.get("cu_seq_lens_q")
    max_len = kwargs.get("max_length_q")
    if cu is None:
        if attention_mask is not None and attention_mask.dim() == 2:
            cu = _segments_from_mask(attention_mask, width)
            max_len = int(cu.diff().max())
        else:  # plain causal attention, one sample per row
            cu = torch.arange(0, (bsz + 1) * width, width, dtype=torch.int32)
            max_len = width
    # [B, H, L, D] -> [B*L, H, D]
    q = query.transpose(1, 2).reshape(bsz * width, n_heads, head_dim)
    k = key.transpose(1, 2).reshape(bsz * width, key.shape[1], head_dim)
    v = value.transpose(1, 2).reshape(bsz * width, value.shape[1], head_dim)
    if int(cu[-1]) != bsz * width:
        raise ValueError(f"cu_seq_lens cover {int(cu[-1])} positions but the batch has {bsz * width}")
    p = dropout if module.training else 0.0
    if q.is_cuda and p == 0.0:
        out = _cuda_varlen(q, k, v, cu, int(max_len), scaling)
    else:
        out = torch.empty_like(q)
        bounds = cu.tolist()
        gqa = q.shape[1] != k.shape[1]
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b <= a:
                continue
            qs, ks, vs = (t[a:b].transpose(0, 1) for t in (q, k, v))  # [H, n, D]
            out[a:b] = F.scaled_dot_product_attention(
                qs, ks, vs, is_causal=True, dropout_p=p, scale=scaling, enable_gqa=gqa
            ).transpose(0, 1)
        if attention_mask is not None and kwargs.get("cu_seq_lens_q") is None and attention_mask.dim() == 2:
            out = out * attention_mask.reshape(-1, 1, 1).to(out.dtype)
    return out.reshape(bsz, width, n_heads, head_dim), None


def register_varlen() -> None:
    """Make `attn_implementation="varlen"` available to every transformers model (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_attention_forward)
