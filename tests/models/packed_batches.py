"""Shared helpers for the isolation tests: real demo samples, real plans, per-sample outputs.

The packed micro-batches come from the real pipeline: demo conversations tokenized with the
project's chat-template tokenizer, planned by `sft.data.plan.plan_epoch` and collated by the
real collators. A sample "run alone" is its own tokens as a one-row batch with no mask and
default positions, through the same model and backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sft.data.demo import generate_demo
from sft.data.plan import MicroBatch
from sft.data.tokenize import tokenize_conversation
from sft.loss import MODEL_KEYS, forward_token_losses
from tests.planning import plan_epoch, targets_of


@dataclass
class Corpus:
    """Flat token arrays and pieces (index, start, end), as `sft.data.dataset` lays them out."""

    ids: np.ndarray
    mask: np.ndarray
    pieces: np.ndarray
    targets: np.ndarray  # shifted targets, as sft.data.targets.row_targets makes them


def demo_corpus(tokenizer, n_rows: int = 80, min_len: int = 40, max_len: int = 200) -> Corpus:
    """Demo conversations of min_len..max_len tokens that have a trained target."""
    ids_l, mask_l = [], []
    for row in generate_demo(n_rows, seed=1):
        ids, mask = tokenize_conversation(tokenizer, row["messages"])
        if min_len <= len(ids) <= max_len and mask[1:].any():
            ids_l.append(ids)
            mask_l.append(mask)
    lens = np.array([len(x) for x in ids_l], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    pieces = np.stack([np.arange(len(lens)), offsets[:-1], offsets[1:]], axis=1).astype(np.int64)
    ids, mask = np.concatenate(ids_l).astype(np.int32), np.concatenate(mask_l)
    return Corpus(ids, mask, pieces, targets_of(mask, pieces, ids))


def packed_micro_batch(
    corpus: Corpus,
    capacity: int = 400,
    n_packs: int = 3,
    min_samples: int = 3,
    strategy: str = "bfd",
) -> MicroBatch:
    """The first micro-batch of the real packing plan whose `n_packs` packs hold >= min_samples each."""
    plan = plan_epoch(
        corpus.pieces,
        corpus.mask,
        kind="packing",
        micro_batch_size=n_packs,
        grad_accum=1,
        world_size=1,
        seed=0,
        epoch=0,
        capacity=capacity,
        strategy=strategy,
    )
    for step in plan.steps:
        for mb in step[0]:
            if len(mb) == n_packs and all(len(row) >= min_samples for row in mb):
                return mb
    raise AssertionError(f"no micro-batch of {n_packs} packs with >= {min_samples} samples each")


def padding_micro_batch(corpus: Corpus, size: int = 4) -> MicroBatch:
    plan = plan_epoch(
        corpus.pieces,
        corpus.mask,
        kind="padding",
        micro_batch_size=size,
        grad_accum=1,
        world_size=1,
        seed=0,
        epoch=0,
        capacity=10**6,
    )
    return plan.steps[0][0][0]


@dataclass
class SampleOut:
    logits: torch.Tensor  # [n, V] at the sample's positions
    loss: torch.Tensor  # mean token loss of the sample
    grads: list[torch.Tensor]  # d loss / d parameter, every trainable parameter


def _grads(loss: torch.Tensor, params: list[torch.Tensor], retain: bool) -> list[torch.Tensor]:
    return [g.detach().clone() for g in torch.autograd.grad(loss, params, retain_graph=retain)]


def packed_outputs(
    model, batch: dict, rows: MicroBatch, flatten: bool, device: str = "cpu"
) -> list[SampleOut]:
    """Per-sample logits, loss and gradients read out of one packed forward pass.

    The loss goes through the product's `forward_token_losses` (only target positions reach the
    LM head); logits come from a second, full forward pass of the same batch.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    dev = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    inputs = {k: dev[k] for k in MODEL_KEYS if k in dev}
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits.float()
    losses, seg, _ = forward_token_losses(model, dev)
    layout = [[seg_ for row in rows for seg_ in row]] if flatten else rows
    out, s = [], 0
    n_samples = sum(len(r) for r in layout)
    for r, row in enumerate(layout):
        pos = 0
        for a, b, _piece in row:
            n = b - a
            loss = losses[seg == s].mean()
            s += 1
            out.append(
                SampleOut(
                    logits[r, pos : pos + n], loss.detach(), _grads(loss, params, s < n_samples)
                )
            )
            pos += n
    return out


def alone_output(model, corpus: Corpus, a: int, b: int, device: str = "cpu") -> SampleOut:
    """The sample's tokens as a one-row batch: no mask, default positions, plain causal attention."""
    params = [p for p in model.parameters() if p.requires_grad]
    ids = torch.from_numpy(corpus.ids[a:b].astype(np.int64))[None].to(device)
    # an oracle independent of sft.data.targets: token t + 1 where it is trained
    labels = np.where(corpus.mask[a:b], corpus.ids[a:b], -100).astype(np.int64)
    logits = model(input_ids=ids, use_cache=False).logits.float()[0]
    targets = torch.from_numpy(labels[1:]).to(device)
    loss = F.cross_entropy(logits[:-1][targets != -100], targets[targets != -100])
    return SampleOut(logits.detach(), loss.detach(), _grads(loss, params, False))


def samples_of(rows: MicroBatch) -> list[tuple[int, int, int]]:
    return [seg for row in rows for seg in row]


def max_grad_diff(g1: list[torch.Tensor], g2: list[torch.Tensor]) -> float:
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(g1, g2))
