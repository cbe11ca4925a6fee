"""The training loss, computed from logits of supervised positions only.

    targets: made once with the tokens (sft/data/targets.py), read here as they are; -100 is ignored.
    token  (default): sum of token losses of the whole optimizer step, over all micro-batches and
                      ranks, divided by the number of supervised tokens of that step.
    sample:           every sample's mean token loss, summed, divided by the step's sample count.
    micro_batch_mean: every micro-batch's own token mean, averaged (HF Trainer / LLaMA-Factory).

`micro_batch_loss` returns the *sum* of the chosen per-unit losses of one micro-batch and the unit
count; the trainer divides by the step's global count (all ranks), in one visible place. Only the
hidden states that carry a target go through the LM head (`logits_to_keep`, plus a pre-hook on the
head for batches of several rows), so the vocabulary-sized logits of prompt and pad positions are
never materialised.

Invariant: for the same samples, the token-normalised loss does not depend on how they are
batched (padding, packing or padding_free, any micro-batch split, any world size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MODEL_KEYS = (
    "input_ids",
    "attention_mask",
    "position_ids",
    "cu_seq_lens_q",
    "cu_seq_lens_k",
    "max_length_q",
    "max_length_k",
)


def _output_head(model: torch.nn.Module) -> torch.nn.Module | None:
    get = getattr(model, "get_output_embeddings", None)
    try:
        head = get() if callable(get) else None
    except (AttributeError, NotImplementedError):
        head = None
    return head if isinstance(head, torch.nn.Module) else None


def forward_token_losses(
    model: torch.nn.Module, batch: dict
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-target losses [N], segment id of each target [N], target mask over the kept positions).

    Only hidden states that carry a target reach the LM head: `logits_to_keep` keeps the positions
    with a target in some row, and with several rows (padding, unflattened packs) a pre-hook on
    the head keeps, of those, only the (row, position) pairs with a target of their own, so
    vocabulary-sized logits are never computed for pads or prompts.
    """
    targets = batch["targets"]
    valid = targets != -100
    keep = valid.any(dim=0).nonzero().squeeze(-1)  # positions with a target in some row
    tgt = targets[:, keep]
    sel = tgt != -100  # [B, K]
    inputs = {k: batch[k] for k in MODEL_KEYS if k in batch}
    head = _output_head(model) if tgt.shape[0] > 1 else None  # no `sel.all()` check: a host sync
    gathered = []

    def only_targets(_module, args):
        hidden = args[0]
        if hidden.dim() != 3 or hidden.shape[:2] != sel.shape:  # not the call we expect: leave it
            return None
        gathered.append(True)
        return (hidden[sel].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(only_targets) if head is not None else None
    try:
        out = model(**inputs, use_cache=False, logits_to_keep=keep)
    finally:
        if handle is not None:
            handle.remove()
    logits = out.logits.float()
    seg = batch["seq_idx"][:, keep][sel]
    if gathered:  # [1, N, V]: one row per target, in row-major order of `sel`
        losses = F.cross_entropy(logits[0], tgt[sel], reduction="none")
        return losses, seg, sel
    losses = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100, reduction="none"
    ).view_as(tgt)
    return losses[sel], seg, sel


def micro_batch_loss(
    model: torch.nn.Module, batch: dict, normalization: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of per-unit losses, token sum) where the unit is a token, a sample or the micro-batch."""
    losses, seg, _ = forward_token_losses(model, batch)
    token_sum = losses.sum()
    if normalization == "token":
        return token_sum, token_sum.detach()
    if normalization == "micro_batch_mean":
        return token_sum / max(losses.numel(), 1), token_sum.detach()
    # sample: mean over each segment's targets, summed over segments
    uniq, inv = torch.unique(seg, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=losses.dtype, device=losses.device).index_add_(
        0, inv, losses
    )
    counts = torch.zeros(len(uniq), dtype=losses.dtype, device=losses.device).index_add_(
        0, inv, torch.ones_like(losses)
    )
    return (sums / counts).sum(), token_sum.detach()


def count_units(meta_targets: int, meta_samples_with_targets: int, normalization: str) -> int:
    """How many units a micro-batch contributes to the step's denominator."""
    if normalization == "token":
        return meta_targets
    if normalization == "sample":
        return meta_samples_with_targets
    return 1
