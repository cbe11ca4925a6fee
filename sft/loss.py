"""The training loss, computed from the hidden states of supervised positions only.

    targets: made once with the tokens (sft/data/targets.py), read here as they are; -100 is ignored.
    token  (default): sum of token losses of the whole optimizer step, over all micro-batches and
                      ranks, divided by the number of supervised tokens of that step.
    sample:           every sample's mean token loss, summed, divided by the step's sample count.
    micro_batch_mean: every micro-batch's own token mean, averaged (HF Trainer / LLaMA-Factory).

`micro_batch_loss` returns the *sum* of the chosen per-unit losses of one micro-batch and the
token-loss sum; the trainer divides by the step's global unit count (all ranks), in one visible
place. Only the hidden states that carry a target reach the LM head (`logits_to_keep`, plus a
pre-hook on the head that keeps the (row, position) pairs with a target), so the vocabulary-sized
logits of prompt and pad positions are never materialised. Then, by `impl`:

    full     the head runs once on the N target states: [N, V] logits, their fp32 copy and grad.
    chunked  the head's input is taken by the pre-hook and the head runs on nothing; the loss and
             its gradients are computed chunk by chunk (`chunk_tokens` targets at a time) inside
             that hook, i.e. inside the head's forward, where every engine (ZeRO-3 included) has
             the head's weight gathered. Peak loss memory is O(chunk_tokens x V) plus one
             gradient of the head's weight, whatever N. No recomputation: the gradients are made
             in forward, backward only scales them.
    liger    liger-kernel's fused linear cross-entropy (CUDA, where installed), same contract.

`auto` is full below a 32,768-token vocabulary; above, it takes per micro-batch whichever of full
and chunked needs less memory for its number of targets (few targets: full; many: chunked).

Invariant: for the same samples, the token-normalised loss does not depend on how they are
batched (padding, packing or padding_free, any micro-batch split, any world size), and `full`
and `chunked` give the same losses and gradients (to float rounding).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from sft.errors import UserError

MODEL_KEYS = (
    "input_ids",
    "attention_mask",
    "position_ids",
    "cu_seq_lens_q",
    "cu_seq_lens_k",
    "max_length_q",
    "max_length_k",
)
AUTO_CHUNK_VOCAB = 32_768  # auto = chunked from this vocabulary size on (logits dominate memory)


def resolve_impl(impl: str, vocab_size: int) -> str:
    """What `auto` stands for: full below AUTO_CHUNK_VOCAB; from there on it stays `auto`, which
    picks per micro-batch the cheaper of full and chunked (`cheaper_impl`)."""
    impl = str(getattr(impl, "value", impl))
    if impl == "auto":
        return "auto" if vocab_size >= AUTO_CHUNK_VOCAB else "full"
    return impl


def cheaper_impl(targets: int, vocab: int, hidden: int, weight_bytes: int, chunk: int) -> str:
    """full or chunked, whichever needs less loss memory for `targets` targets (the accounting
    of sft/plan_memory.py's `logits_memory`): full holds 12 B per [N, V] logit at the start of
    backward (the fp32 log-softmax, its gradient and the logits' gradient); chunked one chunk of
    them (8 B per logit) plus a gradient of the head's weight."""
    full = targets * vocab * 12
    chunked = min(targets, chunk) * vocab * 8 + vocab * hidden * weight_bytes
    return "chunked" if chunked < full else "full"


def loss_function(normalization: str, impl: str, chunk_tokens: int, *, cuda: bool = False):
    """`micro_batch_loss` bound to one normalisation and a resolved implementation."""
    norm = str(getattr(normalization, "value", normalization))
    if impl == "liger":
        if not cuda:
            raise UserError("loss.impl=liger needs CUDA; use loss.impl=chunked on this machine")
        try:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss  # noqa: F401
        except ImportError as e:
            raise UserError(
                "loss.impl=liger needs liger-kernel (pip install liger-kernel); "
                "loss.impl=chunked needs nothing"
            ) from e
    return functools.partial(
        micro_batch_loss, normalization=norm, impl=impl, chunk_tokens=chunk_tokens
    )


def loss_functions(impl, chunk_tokens: int, normalization, model, cuda: bool):
    """(resolved impl, the training loss, the validation loss: token mean) for `model`."""
    w = getattr(_output_head(model), "weight", None)  # ZeRO-3 keeps the full shape in ds_shape
    vocab = int(getattr(w, "ds_shape", w.shape)[0]) if w is not None else 0
    impl = resolve_impl(impl, vocab or getattr(model.config, "vocab_size", 0))
    train = loss_function(normalization, impl, chunk_tokens, cuda=cuda)
    return impl, train, loss_function("token", impl, chunk_tokens, cuda=cuda)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP / DeepSpeed wrappers (they hold it as `.module`)."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def _output_head(model: torch.nn.Module) -> torch.nn.Module | None:
    get = getattr(_unwrap(model), "get_output_embeddings", None)
    try:
        head = get() if callable(get) else None
    except (AttributeError, NotImplementedError):
        head = None
    return head if isinstance(head, torch.nn.Module) else None


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """(sum_i w_i * CE(h_i W^T + b, t_i), per-target losses) without holding [N, V] logits.

    Forward walks the targets `chunk` at a time: logits of the chunk (in fp32), their
    log-sum-exp and loss, then, where a gradient is needed, (softmax - onehot) * w, turned into
    the chunk's rows of dL/dh and added into dL/dW (and dL/db). Backward multiplies those by the
    incoming scalar. The second output (per-target losses) is not differentiable.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, weights, chunk):
        n = hidden.shape[0]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        losses = torch.empty(n, dtype=torch.float32, device=hidden.device)
        gh = torch.empty_like(hidden) if need_h else None
        gw = torch.zeros_like(weight) if need_w else None
        gb = torch.zeros_like(bias) if need_b else None
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            h, t = hidden[s:e], targets[s:e]
            logits = F.linear(h, weight, bias).float()
            lse = torch.logsumexp(logits, dim=-1)
            losses[s:e] = lse - logits.gather(1, t[:, None]).squeeze(1)
            if not (need_h or need_w or need_b):
                continue
            g = logits.sub_(lse[:, None]).exp_()  # softmax, in place
            g[torch.arange(e - s, device=g.device), t] -= 1
            if weights is not None:
                g.mul_(weights[s:e, None])
            g = g.to(h.dtype)
            if need_h:
                gh[s:e] = g @ weight.to(g.dtype)
            if need_w:
                gw.add_((g.t() @ h).to(gw.dtype))
            if need_b:
                gb.add_(g.sum(0).to(gb.dtype))
        ctx.save_for_backward(gh, gw, gb)
        ctx.mark_non_differentiable(losses)
        total = losses.sum() if weights is None else (losses * weights).sum()
        return total, losses

    @staticmethod
    def backward(ctx, grad_total, _grad_losses):
        gh, gw, gb = ctx.saved_tensors
        return (
            None if gh is None else gh * grad_total.to(gh.dtype),
            None if gw is None else gw * grad_total.to(gw.dtype),
            None if gb is None else gb * grad_total.to(gb.dtype),
            None,
            None,
            None,
        )


def _unit_weights(seg: torch.Tensor, normalization: str) -> torch.Tensor | None:
    """Each target's weight in the unit sum: 1 (token), 1/N (micro_batch_mean), 1/|sample|."""
    if normalization == "token":
        return None
    if normalization == "micro_batch_mean":
        return torch.full(seg.shape, 1.0 / max(seg.numel(), 1), device=seg.device)
    _, inv, counts = torch.unique(seg, return_inverse=True, return_counts=True)
    return 1.0 / counts[inv].float()


def _liger_total(hidden, weight, bias, targets, weights):
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    if weights is not None and not torch.all(weights == weights[0]):
        raise UserError(
            "loss.impl=liger supports train.loss_normalization=token or micro_batch_mean; "
            "use loss.impl=chunked for sample"
        )
    total = LigerFusedLinearCrossEntropyLoss(reduction="sum")(weight, hidden, targets, bias)
    total = total if weights is None else total * weights[0]
    with torch.no_grad():  # per-target losses for the report only (chunked, no gradient)
        _, losses = ChunkedLinearCrossEntropy.apply(
            hidden.detach(), weight.detach(), None if bias is None else bias.detach(),
            targets, None, 1024,
        )  # fmt: skip
    return total, losses


def micro_batch_loss(
    model: torch.nn.Module,
    batch: dict,
    normalization: str,
    impl: str = "full",
    chunk_tokens: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of per-unit losses, token-loss sum) where the unit is a token, a sample or the batch."""
    normalization = str(getattr(normalization, "value", normalization))
    targets = batch["targets"]
    keep = (targets != -100).any(dim=0).nonzero().squeeze(-1)  # positions with some target
    tgt = targets[:, keep]
    sel = tgt != -100  # [B, K]: the (row, position) pairs with a target
    seg = batch["seq_idx"][:, keep][sel]
    labels = tgt[sel]
    inputs = {k: batch[k] for k in MODEL_KEYS if k in batch}
    head = _output_head(model) if impl != "full" or sel.shape[0] > 1 else None
    if impl == "auto":  # the cheaper of the two for this micro-batch's targets
        w = getattr(head, "weight", None)
        v, h = (int(x) for x in getattr(w, "ds_shape", w.shape)) if w is not None else (0, 0)
        impl = cheaper_impl(labels.numel(), v, h, w.element_size() if v else 4, chunk_tokens)
    fused = impl in ("chunked", "liger")
    if fused and (head is None or getattr(head, "weight", None) is None):
        raise UserError(f"loss.impl={impl} needs a model whose output embedding is a linear layer")
    weights = _unit_weights(seg, normalization) if fused else None
    found: list = []

    def on_head_input(module, args):
        hidden = args[0]
        if hidden.dim() != 3 or hidden.shape[:2] != sel.shape:  # not the call we expect: leave it
            return None
        h = hidden[sel]  # [N, H], row-major order of `sel`
        if not fused:
            found.append(None)
            return (h.unsqueeze(0), *args[1:])
        w, b = module.weight, getattr(module, "bias", None)
        if impl == "liger":
            found.append(_liger_total(h, w, b, labels, weights))
        else:
            found.append(ChunkedLinearCrossEntropy.apply(h, w, b, labels, weights, chunk_tokens))
        return (hidden[:, :0], *args[1:])  # the head itself then computes no logits at all

    handle = head.register_forward_pre_hook(on_head_input) if head is not None else None
    try:
        out = model(**inputs, use_cache=False, logits_to_keep=keep)
    finally:
        if handle is not None:
            handle.remove()
    if fused:
        if len(found) != 1:
            raise RuntimeError(f"loss.impl={impl}: the output head ran {len(found)} times, not 1")
        total, losses = found[0]
        # The head's own (empty) output joins the graph: the weight's gradient then reaches it
        # through the head's backward as well, where ZeRO-3 gathers the weight (its hooks sit on
        # the head's outputs), instead of arriving while the weight is partitioned.
        return total + out.logits.float().sum(), losses.sum().detach()
    logits = out.logits.float()
    if found:  # [1, N, V]: one row per target
        losses = F.cross_entropy(logits[0], labels, reduction="none")
    else:
        losses = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            tgt.reshape(-1),
            ignore_index=-100,
            reduction="none",
        ).view_as(tgt)[sel]
    return _reduce(losses, seg, normalization)


def _reduce(losses: torch.Tensor, seg: torch.Tensor, normalization: str):
    token_sum = losses.sum()
    if normalization == "token":
        return token_sum, token_sum.detach()
    if normalization == "micro_batch_mean":
        return token_sum / max(losses.numel(), 1), token_sum.detach()
    uniq, inv = torch.unique(seg, return_inverse=True)  # sample: each segment's mean, summed
    sums = torch.zeros(len(uniq), dtype=losses.dtype, device=losses.device).index_add_(
        0, inv, losses
    )
    counts = torch.zeros(len(uniq), dtype=losses.dtype, device=losses.device).index_add_(
        0, inv, torch.ones_like(losses)
    )
    return (sums / counts).sum(), token_sum.detach()


def forward_token_losses(
    model: torch.nn.Module, batch: dict
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-target losses [N] with their graph, segment id of each target [N], target mask).

    The isolation tests read per-sample losses from this (full logits at target positions).
    """
    targets = batch["targets"]
    keep = (targets != -100).any(dim=0).nonzero().squeeze(-1)
    sel = targets[:, keep] != -100
    seg = batch["seq_idx"][:, keep][sel]
    inputs = {k: batch[k] for k in MODEL_KEYS if k in batch}
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits.float()
    losses = F.cross_entropy(logits[sel], targets[:, keep][sel], reduction="none")
    return losses, seg, sel


def count_units(meta_targets: int, meta_samples_with_targets: int, normalization: str) -> int:
    """How many units a micro-batch contributes to the step's denominator."""
    if normalization == "token":
        return meta_targets
    if normalization == "sample":
        return meta_samples_with_targets
    return 1
