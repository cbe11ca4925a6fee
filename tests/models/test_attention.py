"""Packed samples never see each other, on every CPU attention backend (sdpa, eager, varlen).

For tiny llama and qwen2 models, every sample inside a packed micro-batch (real plan, real
PackingCollator) has the same logits, loss and gradients as the sample run alone (1e-5), with
flatten=True (one row) and flatten=False (several padded rows); the leaky control
(`collator=leaky_packing`) differs measurably; a padding batch through varlen equals sdpa; backend
choices that would leak or cannot run are refused with a UserError.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools

import pytest
import torch

from sft.data.collators import LeakyPackingCollator, PackingCollator, PaddingCollator
from sft.errors import UserError
from sft.loss import MODEL_KEYS, micro_batch_loss
from sft.models.build import load_model, resolve_attn_implementation
from sft.models.tiny import build_tiny_tokenizer
from tests.models.packed_batches import (
    alone_output,
    demo_corpus,
    max_grad_diff,
    packed_micro_batch,
    packed_outputs,
    padding_micro_batch,
    samples_of,
)

ARCHS = ("llama", "qwen2")
BACKENDS = ("sdpa", "eager", "varlen")
TOL = 1e-5
LEAK = 1e-2  # the leaky control must differ by at least this much (it differs by ~0.4 here)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def corpus(tokenizer):
    return demo_corpus(tokenizer)


@pytest.fixture(scope="module")
def rows(corpus):
    mb = packed_micro_batch(corpus, capacity=400, n_packs=3)
    # guard against a vacuous pass: several packs, each really holding several samples
    assert len(mb) == 3
    assert all(len(row) >= 3 for row in mb), [len(r) for r in mb]
    return mb


@functools.cache
def _model(arch: str, backend: str):
    """A seeded tiny model; cached, so tests must not change it (no .backward(), no config edits)."""
    return load_model("tiny", arch=arch, attn_implementation=backend, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("flatten", [True, False], ids=["flatten", "rows"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", ARCHS)
def test_packed_sample_equals_sample_alone(arch, backend, flatten, corpus, rows, tokenizer):
    model = _model(arch, backend)
    batch, meta = PackingCollator(pad_id=tokenizer.pad_token_id, flatten=flatten)(rows, corpus)
    assert "attention_mask" not in batch
    if not flatten:  # several rows, and at least one of them padded
        assert batch["input_ids"].shape[0] == 3 and meta.pad_tokens > 0
    packed = packed_outputs(model, batch, rows, flatten)
    segs = samples_of(rows)
    assert len(packed) == len(segs) >= 9
    for (a, b, _), got in zip(segs, packed):
        ref = alone_output(model, corpus, a, b)
        assert got.logits.shape == ref.logits.shape
        assert float((got.logits - ref.logits).abs().max()) <= TOL
        assert abs(float(got.loss - ref.loss)) <= TOL
        assert max_grad_diff(got.grads, ref.grads) <= TOL


@pytest.mark.parametrize("flatten", [True, False], ids=["flatten", "rows"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", ARCHS)
def test_leaky_control_differs(arch, backend, flatten, corpus, rows, tokenizer):
    """collator=leaky_packing (all-ones mask, running positions): later samples see earlier ones."""
    model = _model(arch, backend)
    batch, _ = LeakyPackingCollator(pad_id=tokenizer.pad_token_id, flatten=flatten)(rows, corpus)
    assert bool((batch["attention_mask"] == 1).all())
    layout = [samples_of(rows)] if flatten else rows
    with torch.no_grad():
        logits = model(**{k: batch[k] for k in MODEL_KEYS if k in batch}, use_cache=False).logits
        for r, row in enumerate(layout):
            pos = 0
            for k, (a, b, _) in enumerate(row):
                alone = model(
                    input_ids=torch.from_numpy(corpus.ids[a:b].astype("int64"))[None]
                ).logits[0]
                diff = float((logits[r, pos : pos + b - a] - alone).abs().max())
                if k == 0:  # the first sample of a row has nothing before it to leak from
                    assert diff <= TOL
                else:
                    assert diff > LEAK, (r, k, diff)
                pos += b - a


@pytest.mark.parametrize("arch", ARCHS)
def test_padding_batch_through_varlen_equals_sdpa(arch, corpus, tokenizer):
    mb = padding_micro_batch(corpus, size=4)
    batch, meta = PaddingCollator(pad_id=tokenizer.pad_token_id)(mb, corpus)
    assert meta.pad_tokens > 0  # rows of different lengths: real padding to handle
    outs = {}
    for backend in ("sdpa", "varlen"):
        model = load_model("tiny", arch=arch, attn_implementation=backend, seed=0)
        inputs = {k: batch[k] for k in MODEL_KEYS if k in batch}
        with torch.no_grad():
            logits = model(**inputs, use_cache=False).logits
        loss, _ = micro_batch_loss(model, batch, "token")
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        outs[backend] = (logits, loss.detach(), grads)
    real = batch["attention_mask"].bool()
    (l1, s1, g1), (l2, s2, g2) = outs["sdpa"], outs["varlen"]
    assert float((l1[real] - l2[real]).abs().max()) <= TOL
    assert abs(float(s1 - s2)) <= TOL * max(1.0, abs(float(s1)))
    assert max_grad_diff(g1, g2) <= TOL


def test_left_padded_batch_through_varlen_equals_sdpa(corpus, tokenizer):
    """varlen reads the 2-D mask itself: pads before the sample are kept apart too."""
    mb = padding_micro_batch(corpus, size=3)
    batch, _ = PaddingCollator(pad_id=tokenizer.pad_token_id)(mb, corpus)
    real = batch["attention_mask"].bool()
    shift = (~real).sum(-1)
    left = {
        k: torch.stack([row.roll(int(n)) for row, n in zip(batch[k], shift)])
        for k in ("input_ids", "attention_mask")
    }
    assert bool((left["attention_mask"][:, 0] == 0).any())  # really left-padded
    out = {}
    for backend in ("sdpa", "varlen"):
        with torch.no_grad():
            out[backend] = _model("llama", backend)(**left, use_cache=False).logits
    keep = left["attention_mask"].bool()
    assert float((out["sdpa"][keep] - out["varlen"][keep]).abs().max()) <= TOL


def test_varlen_keeps_the_sliding_window_inside_each_sample(corpus, rows, tokenizer):
    """A sliding-window model (tiny Mistral, window 16) gets the same band per packed sample."""
    batch, _ = PackingCollator(pad_id=tokenizer.pad_token_id, flatten=True)(rows, corpus)
    models = {
        b: load_model("tiny", arch="mistral", attn_implementation=b, seed=0)
        for b in ("varlen", "sdpa")
    }
    for m in models.values():
        m.config.sliding_window = 16
    full_model = _model("mistral", "sdpa")  # no window
    with torch.no_grad():
        packed = models["varlen"](
            **{k: batch[k] for k in MODEL_KEYS if k in batch}, use_cache=False
        ).logits[0]
        pos = 0
        for a, b, _ in samples_of(rows):
            ids = torch.from_numpy(corpus.ids[a:b].astype("int64"))[None]
            alone = models["sdpa"](input_ids=ids).logits[0]
            full = full_model(input_ids=ids).logits[0]  # without the window: must differ
            assert float((packed[pos : pos + b - a] - alone).abs().max()) <= TOL
            assert float((alone - full).abs().max()) > LEAK
            pos += b - a


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_agree_on_one_sample(backend, corpus):
    """The reference itself: one sample alone gives the same logits on every backend."""
    a, b = int(corpus.pieces[0, 1]), int(corpus.pieces[0, 2])
    ids = torch.from_numpy(corpus.ids[a:b].astype("int64"))[None]
    with torch.no_grad():
        ref = _model("llama", "sdpa")(input_ids=ids).logits
        got = _model("llama", backend)(input_ids=ids).logits
    assert float((ref - got).abs().max()) <= TOL


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("impl", ["flash_attention_2", "flash_attention_3"])
def test_flash_attention_refused_on_cpu(impl):
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        resolve_attn_implementation(impl, "varlen", cuda=False)


@pytest.mark.skipif(
    importlib.util.find_spec("flash_attn") is not None, reason="flash_attn is installed"
)
def test_flash_attention_refused_without_package():
    with pytest.raises(UserError, match="flash_attn"):
        resolve_attn_implementation("flash_attention_2", "varlen", cuda=True)


def test_flex_attention_training_refused_on_cpu():
    with pytest.raises(UserError, match="no backward on CPU"):
        resolve_attn_implementation("flex_attention", "varlen", cuda=False, training=True)
    assert (
        resolve_attn_implementation("flex_attention", "varlen", cuda=False, training=False)
        == "flex_attention"
    )


def test_auto_picks_an_isolating_backend():
    from sft.batching import BATCHING_CONFIGS

    want = {
        "padding": "sdpa",
        "packing": "varlen",
        "padding_free": "varlen",
        "leaky_packing": "sdpa",
    }
    for name, cls in BATCHING_CONFIGS.items():
        assert cls().build(512).attention("auto", cuda=False) == want[name], name


@pytest.mark.parametrize("arch", ARCHS)
def test_loaded_model_has_no_cache(arch):
    """A cache in training turns off transformers' packed-sequence detection: never on."""
    assert _model(arch, "sdpa").config.use_cache is False


def _one_call_per_segment(q, k, v, cu, window=None):
    """Reference: every segment's causal attention alone, [B, H, L, D] -> [B, L, H, D]."""
    bsz, heads, width, dim = q.shape
    flat = [t.transpose(1, 2).reshape(bsz * width, t.shape[1], dim) for t in (q, k, v)]
    outs = []
    for a, b in itertools.pairwise(cu.tolist()):
        if b > a:
            qs, ks, vs = (t[a:b].transpose(0, 1)[None] for t in flat)
            n = b - a
            i = torch.arange(n)
            band = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < (window or n))
            o = torch.nn.functional.scaled_dot_product_attention(
                qs, ks, vs, attn_mask=band, enable_gqa=True
            )
            outs.append(o[0].transpose(0, 1))
    return torch.cat(outs).view(bsz, width, heads, dim)


SEGMENTS = {  # rows of segment lengths (a row's unused tail becomes a segment of its own)
    "one_row_mixed": ([[5, 17, 30, 1, 600, 31, 32, 33]], 1024, None),
    "bucket_edges": ([[15, 16, 17, 127, 128, 129], [511, 512, 255, 256]], 1536, None),
    "equal_rows": ([[64, 64], [64, 64], [128]], 128, None),
    "window": ([[300, 200, 20], [300, 220]], 520, 40),
}


@pytest.mark.parametrize("case", sorted(SEGMENTS))
def test_bucketed_segments_equal_one_call_per_segment(case, monkeypatch):
    """Stacking short segments into padded bucket calls changes neither outputs nor gradients
    (fp64, GQA 6:2, forward and backward), and really batches: fewer sdpa calls than segments."""
    from sft.models import attention

    lengths, width, window = SEGMENTS[case]
    cu = [0]
    for r, row in enumerate(lengths):
        for n in row:
            cu.append(cu[-1] + n)
        if cu[-1] < (r + 1) * width:
            cu.append((r + 1) * width)
    cu = torch.tensor(cu, dtype=torch.int32)
    g = torch.Generator().manual_seed(0)
    shape = (len(lengths), None, width, 16)
    q, k, v = (
        torch.randn(*shape[:1], h, *shape[2:], generator=g, dtype=torch.float64).requires_grad_()
        for h in (6, 2, 2)
    )
    up = torch.randn(len(lengths), width, 6, 16, generator=g, dtype=torch.float64)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        attention.F,
        "scaled_dot_product_attention",
        lambda *a, **kw: calls.append(1) or sdpa(*a, **kw),
    )
    results = []
    for fn in (
        lambda: attention._per_segment(q, k, v, cu, 0.0, None, window),
        lambda: _one_call_per_segment(q, k, v, cu, window),
    ):
        for t in (q, k, v):
            t.grad = None
        out = fn()
        (out * up).sum().backward()
        results.append([out.detach(), q.grad.clone(), k.grad.clone(), v.grad.clone()])
        calls.append(None)  # the reference's own calls come after this mark
    for a, b in zip(*results, strict=True):
        assert float((a - b).abs().max()) < 1e-12
    n_segments = int((cu.diff() > 0).sum())
    buckets = {attention._bucket_length(int(n)) for n in cu.diff() if n > 0}
    assert calls.index(None) == len(buckets) < n_segments


def test_bucket_padding_stays_under_an_eighth():
    from sft.models.attention import BATCH_BELOW, _bucket_length

    for n in range(1, 2 * BATCH_BELOW):
        m = _bucket_length(n)
        assert m >= n
        assert m == n if n >= BATCH_BELOW else m - n < max(16, n / 8 + 1)


def test_attention_dropout_keeps_one_call_per_segment(monkeypatch):
    """With dropout, every segment gets its own call in order (the random stream of the masks
    stays that of one call per sample, which the golden runs with model.dropout=0.1 pin)."""
    from sft.models import attention

    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        attention.F,
        "scaled_dot_product_attention",
        lambda q, *a, **kw: calls.append(q.shape[0] * q.shape[2]) or sdpa(q, *a, **kw),
    )
    q, k, v = (torch.randn(1, h, 64, 8) for h in (4, 2, 2))
    cu = torch.tensor([0, 20, 40, 50, 64], dtype=torch.int32)
    attention._per_segment(q, k, v, cu, 0.1, None, None)
    assert calls == [20, 20, 10, 14]
    calls.clear()
    attention._per_segment(q, k, v, cu, 0.0, None, None)
    assert calls == [32, 32 * 2]  # 10 and 14 share the 16 bucket; 20, 20 the 32 one
