"""The training loss, computed from logits of supervised positions only.

    shift: the target of position t is labels[t + 1]; targets of -100 are ignored.
    token  (default): sum of token losses of the whole optimizer step, over all micro-batches and
                      ranks, divided by the number of supervised tokens of that step.
    sample:           every sample's mean token loss, summed, divided by the step's sample count.
    micro_batch_mean: every micro-batch's own token mean, averaged (HF Trainer / LLaMA-Factory).

`micro_batch_loss` returns the *sum* of the chosen per-unit losses of one micro-batch and the unit
count; the trainer divides by the step's global count (all ranks), in one visible place. Only the
positions that carry a target go through the LM head (`logits_to_keep`), so the vocabulary-sized
logits of prompt and pad positions are never materialised.

Invariant: for the same samples, the token-normalised loss does not depend on how they are
batched (padding, packing or padding_free, any micro-batch split, any world size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MODEL_KEYS = ("input_ids", "attention_mask", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k",
              "max_length_q", "max_length_k")


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """labels[:, t + 1] at position t; -100 at the last position."""
    pad = torch.full_like(labels[:, :1], -100)
    return torch.cat([labels[:, 1:], pad], dim=1)


def forward_token_losses(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-target losses [N], segment id of each target [N], keep mask) for one micro-batch."""
    targets = shifted_targets(batch["labels"])
    valid = targets != -100
    keep = valid.any(dim=0).nonzero().squeeze(-1)  # positions with a target in some row
    inputs = {k: batch[k] for k in MODEL_KEYS if k in batch}
    out = model(**inputs, use_cache=False, logits_to_keep=keep)
    logits = out.logits.float()  # [B, K, V]
    tgt = targets[:, keep]
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100,
                             reduction="none").view_as(tgt)
    sel = tgt != -100
    seg = batch["seq_idx"][:, keep]
    return losses[sel], seg[sel], sel


def micro_batch_loss(model: torch.nn.Module, batch: dict, normalization: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of per-unit losses, token sum) where the unit is a token, a sample or the micro-batch."""
    losses, seg, _ = forward_token_losses(model, batch)
    token_sum = losses.sum()
    if normalization == "token":
        return token_sum, token_sum.detach()
    if normalization == "micro_batch_mean":
        return token_sum / max(losses.numel(), 1), token_sum.detach()
    # sample: mean over each segment's targets, summed over segments
    uniq, inv = torch.unique(seg, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=losses.dtype, device=losses.device).index_add_(0, inv, losses)
    counts = torch.zeros(len(uniq), dtype=losses.dtype, device=losses.device).index_add_(
        0, inv, torch.ones_like(losses))
    return (sums / counts).sum(), token_sum.detach()


def count_units(meta_targets: int, meta_samples_with_targets: int, normalization: str) -> int:
    """How many units a micro-batch contributes to the step's denominator."""
    if normalization == "token":
        return meta_targets
    if normalization == "sample":
        return meta_samples_with_targets
    return 1
