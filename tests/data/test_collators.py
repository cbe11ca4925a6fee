"""Collators: the invariants drawn in their docstrings, on real tokenized demo samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sft.data.collators import (
    LeakyPackingCollator,
    PackingCollator,
    PaddingCollator,
    PaddingFreeCollator,
)
from sft.models.tiny import build_tiny_tokenizer
from tests.models.packed_batches import Corpus, demo_corpus, packed_micro_batch
from tests.planning import build_rows, plan_epoch

PAD = 256


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return demo_corpus(build_tiny_tokenizer(), n_rows=120, min_len=30, max_len=400)


def _padding_mb(corpus: Corpus, size: int = 5):
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
    mb = plan.steps[0][0][0]
    assert len({b - a for ((a, b, _),) in mb}) > 1  # different lengths: padding really happens
    return mb


def _packing_mb(corpus: Corpus):
    mb = packed_micro_batch(corpus, capacity=600, n_packs=3)
    assert len(mb) == 3 and all(len(row) >= 3 for row in mb)  # non-trivial packs
    assert len({sum(b - a for a, b, _ in row) for row in mb}) > 1  # unequal: rows get padded
    return mb


def _segments(batch: dict) -> list[tuple[int, int, int]]:
    """(row, start, end) of every sample in the batch, from seq_idx."""
    out = []
    seq = batch["seq_idx"].numpy()
    for s in range(int(seq.max()) + 1):
        r, cols = np.nonzero(seq == s)
        assert len(set(r)) == 1 and np.all(np.diff(cols) == 1)  # contiguous, in one row
        out.append((int(r[0]), int(cols[0]), int(cols[-1]) + 1))
    return out


# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize("multiple", [1, 8])
def test_padding_rows_are_right_padded_and_masked(corpus, multiple):
    mb = _padding_mb(corpus)
    batch, meta = PaddingCollator(pad_id=PAD, pad_to_multiple_of=multiple)(mb, corpus)
    lens = [b - a for ((a, b, _),) in mb]
    width = batch["input_ids"].shape[1]
    assert width == -(-max(lens) // multiple) * multiple and width % multiple == 0
    for r, ((a, b, _),) in enumerate(mb):
        n = b - a
        assert batch["input_ids"][r, :n].tolist() == corpus.ids[a:b].tolist()
        assert (batch["input_ids"][r, n:] == PAD).all()
        assert batch["attention_mask"][r].tolist() == [1] * n + [0] * (width - n)
        # oracle: position t predicts token t + 1 when that token is trained, never past the end
        expect = np.where(corpus.mask[a + 1 : b], corpus.ids[a + 1 : b], -100).tolist() + [-100]
        assert batch["targets"][r, :n].tolist() == expect
        assert (batch["targets"][r, n:] == -100).all()
        assert (batch["seq_idx"][r, :n] == r).all() and (batch["seq_idx"][r, n:] == -1).all()
    assert meta.samples == len(mb) and meta.tokens == sum(lens)
    assert meta.pad_tokens == batch["input_ids"].numel() - sum(lens) > 0
    assert meta.targets == int((batch["targets"] != -100).sum()) > 0
    assert "position_ids" not in batch and "cu_seq_lens_q" not in batch


# --------------------------------------------------------------------------- packing


@pytest.mark.parametrize("flatten", [True, False], ids=["flatten", "rows"])
def test_packing_invariants(corpus, flatten):
    mb = _packing_mb(corpus)
    batch, meta = PackingCollator(
        pad_id=PAD, flatten=flatten, pad_to_multiple_of=1 if flatten else 16
    )(mb, corpus)
    assert "attention_mask" not in batch
    ids, tgt, pos = batch["input_ids"], batch["targets"], batch["position_ids"]
    assert ids.shape[0] == (1 if flatten else len(mb))
    if not flatten:
        assert ids.shape[1] % 16 == 0 and meta.pad_tokens > 0
    planned = [seg for row in mb for seg in row]
    segs = _segments(batch)
    assert len(segs) == len(planned) >= 9
    for (r, s, e), (a, b, _) in zip(segs, planned):
        assert e - s == b - a
        assert ids[r, s:e].tolist() == corpus.ids[a:b].tolist()
        assert pos[r, s:e].tolist() == list(range(b - a))  # positions restart for every sample
        expect = np.where(corpus.mask[a + 1 : b], corpus.ids[a + 1 : b], -100).tolist()
        assert tgt[r, s : e - 1].tolist() == expect  # each position predicts its own next token
        # no target crosses a boundary: the last position of a sample predicts nothing
        assert tgt[r, e - 1] == -100
    # pads: label -100, seq_idx -1, positions restarting (a segment of their own)
    pads = batch["seq_idx"] == -1
    assert (ids[pads] == PAD).all() and (tgt[pads] == -100).all()
    assert int(pads.sum()) == meta.pad_tokens
    # cu_seq_lens: segment lengths over the flattened rows, pads included; sum = every position
    cu = batch["cu_seq_lens_q"]
    assert cu is batch["cu_seq_lens_k"] or torch.equal(cu, batch["cu_seq_lens_k"])
    assert cu.dtype == torch.int32 and int(cu[0]) == 0 and int(cu[-1]) == ids.numel()
    flat_pos = pos.reshape(-1)
    starts = set(torch.nonzero(flat_pos == 0).squeeze(-1).tolist())
    assert set(cu[:-1].tolist()) == starts  # a segment starts exactly where positions restart
    assert batch["max_length_q"] == batch["max_length_k"] == int(cu.diff().max())
    assert meta.samples == len({p for _, _, p in planned}) and meta.tokens == sum(
        b - a for a, b, _ in planned
    )
    assert meta.targets == int((tgt != -100).sum())


def test_packing_loses_no_token(corpus):
    """Concatenating the non-pad tokens gives back exactly the samples' tokens, in plan order."""
    mb = _packing_mb(corpus)
    for flatten in (True, False):
        batch, _ = PackingCollator(pad_id=PAD, flatten=flatten)(mb, corpus)
        real = batch["seq_idx"] != -1
        got = batch["input_ids"][real].tolist()
        want = np.concatenate([corpus.ids[a:b] for row in mb for a, b, _ in row]).tolist()
        assert got == want


def test_padding_loses_no_token(corpus):
    mb = _padding_mb(corpus)
    batch, _ = PaddingCollator(pad_id=PAD, pad_to_multiple_of=8)(mb, corpus)
    got = batch["input_ids"][batch["attention_mask"].bool()].tolist()
    assert got == np.concatenate([corpus.ids[a:b] for ((a, b, _),) in mb]).tolist()


def test_leaky_packing_has_all_ones_mask_and_no_positions(corpus):
    mb = _packing_mb(corpus)
    batch, _ = LeakyPackingCollator(pad_id=PAD, flatten=True)(mb, corpus)
    isolated, _ = PackingCollator(pad_id=PAD, flatten=True)(mb, corpus)
    assert (batch["attention_mask"] == 1).all()
    assert "position_ids" not in batch and "cu_seq_lens_q" not in batch
    assert torch.equal(batch["targets"], isolated["targets"])  # only attention differs


def test_padding_free_equals_packing_flatten_on_one_sample_rows(corpus):
    mb = _padding_mb(corpus)
    free, m1 = PaddingFreeCollator(pad_id=PAD)(mb, corpus)
    packed, m2 = PackingCollator(pad_id=PAD, flatten=True)(mb, corpus)
    assert free.keys() == packed.keys()
    for k in free:
        if torch.is_tensor(free[k]):
            assert torch.equal(free[k], packed[k]), k
        else:
            assert free[k] == packed[k], k
    assert m1 == m2 and m1.pad_tokens == 0 and m1.samples == len(mb)


def test_padding_free_has_the_samples_and_targets_of_padding(corpus):
    mb = _padding_mb(corpus)
    free, m1 = PaddingFreeCollator(pad_id=PAD)(mb, corpus)
    padded, m2 = PaddingCollator(pad_id=PAD)(mb, corpus)
    assert (m1.samples, m1.tokens, m1.targets, m1.piece_ids) == (
        m2.samples,
        m2.tokens,
        m2.targets,
        m2.piece_ids,
    )
    real = padded["attention_mask"].bool()
    assert free["targets"][0].tolist() == padded["targets"][real].tolist()


def test_random_concat_fragment_counts_its_piece_once(corpus):
    rows, _ = build_rows(
        corpus.pieces,
        corpus.mask,
        kind="packing",
        capacity=300,
        strategy="random_concat",
        seed=0,
        epoch=0,
        replan_each_epoch=False,
    )
    # two consecutive chunks share the piece that was cut between them
    shared = next(i for i in range(len(rows) - 1) if rows[i][-1][2] == rows[i + 1][0][2])
    pair = [rows[shared], rows[shared + 1]]
    batch, meta = PackingCollator(pad_id=PAD, flatten=True)(pair, corpus)
    n_segments = len(pair[0]) + len(pair[1])
    assert meta.samples == n_segments - 1 and len(meta.piece_ids) == n_segments
    # the second fragment restarts at position 0; the first fragment's last position (whose next
    # token lies in the second fragment) predicts nothing
    first = sum(b - a for a, b, _ in pair[0])
    assert int(batch["position_ids"][0, first]) == 0 and int(batch["targets"][0, first - 1]) == -100


def test_each_batching_choice_builds_its_collator():
    from sft.batching import LeakyPackingConfig, PackingConfig, PaddingConfig, PaddingFreeConfig

    assert isinstance(PaddingConfig().build(512).collator(PAD, "sdpa"), PaddingCollator)
    assert isinstance(PaddingFreeConfig().build(512).collator(PAD, "varlen"), PaddingFreeCollator)
    packing = PackingConfig(pad_to_multiple_of=8).build(512)
    assert packing.collator(PAD, "varlen").flatten
    rows = packing.collator(PAD, "sdpa")
    assert isinstance(rows, PackingCollator) and (rows.flatten, rows.multiple) == (False, 8)
    leaky = LeakyPackingConfig().build(512).collator(PAD, "sdpa")
    assert isinstance(leaky, LeakyPackingCollator)
