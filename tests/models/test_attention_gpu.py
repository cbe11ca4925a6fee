"""Packed-sample isolation on the CUDA backends: flash_attention_2, varlen (torch's varlen_attn
kernel), flex_attention and sdpa. Skipped without a CUDA GPU.

Same assertions as tests/models/test_attention.py: every sample of a packed micro-batch (real
plan, real collator) has the logits, loss and gradients it has alone, and the leaky control
differs. The flash kernels (flash_attention_2, varlen_attn) only take fp16/bf16, so those run in
bf16 with a bf16 tolerance; sdpa and flex_attention run in fp32 at 1e-5.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from sft.data.collators import LeakyPackingCollator, PackingCollator
from sft.loss import MODEL_KEYS
from sft.models.build import load_model, resolve_attn_implementation
from sft.models.tiny import build_tiny_tokenizer
from tests.models.packed_batches import (
    alone_output,
    demo_corpus,
    max_grad_diff,
    packed_micro_batch,
    packed_outputs,
    samples_of,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

# backend -> (dtype, absolute tolerance on logits and loss, relative tolerance on gradients)
CASES = {
    "sdpa": ("fp32", 1e-5, 1e-5),
    "flex_attention": ("fp32", 1e-5, 1e-5),
    "varlen": ("bf16", 3e-2, 3e-2),
    "flash_attention_2": ("bf16", 3e-2, 3e-2),
}
LEAK = 0.1  # the leaky control differs by ~0.4 in these models


def _needs(backend: str) -> None:
    if backend == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash_attn is not installed")
    if backend == "varlen":
        try:
            from torch.nn.attention.varlen import varlen_attn  # noqa: F401
        except ImportError:
            pytest.skip("this torch has no torch.nn.attention.varlen")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def corpus(tokenizer):
    return demo_corpus(tokenizer)


@pytest.fixture(scope="module")
def rows(corpus):
    mb = packed_micro_batch(corpus, capacity=400, n_packs=3)
    assert len(mb) == 3 and all(len(row) >= 3 for row in mb), [len(r) for r in mb]
    return mb


def _model(arch: str, backend: str, dtype: str):
    assert resolve_attn_implementation(backend, "varlen", cuda=True) == backend
    return load_model("tiny", arch=arch, attn_implementation=backend, dtype=dtype, seed=0).cuda()


@pytest.mark.parametrize("flatten", [True, False], ids=["flatten", "rows"])
@pytest.mark.parametrize("backend", list(CASES))
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_packed_sample_equals_sample_alone_gpu(arch, backend, flatten, corpus, rows, tokenizer):
    _needs(backend)
    dtype, tol, gtol = CASES[backend]
    model = _model(arch, backend, dtype)
    batch, _ = PackingCollator(pad_id=tokenizer.pad_token_id, flatten=flatten)(rows, corpus)
    assert "attention_mask" not in batch
    packed = packed_outputs(model, batch, rows, flatten, device="cuda")
    for (a, b, _), got in zip(samples_of(rows), packed):
        ref = alone_output(model, corpus, a, b, device="cuda")
        assert float((got.logits - ref.logits).abs().max()) <= tol
        assert abs(float(got.loss - ref.loss)) <= tol
        scale = max(float(g.float().abs().max()) for g in ref.grads)
        assert max_grad_diff(got.grads, ref.grads) <= gtol * max(scale, 1.0)


@pytest.mark.parametrize("backend", list(CASES))
def test_leaky_control_differs_gpu(backend, corpus, rows, tokenizer):
    _needs(backend)
    dtype, tol, _ = CASES[backend]
    model = _model("llama", backend, dtype)
    batch, _ = LeakyPackingCollator(pad_id=tokenizer.pad_token_id, flatten=True)(rows, corpus)
    inputs = {k: batch[k].cuda() for k in MODEL_KEYS if k in batch}
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits[0].float()
        pos, diffs = 0, []
        for a, b, _ in samples_of(rows):
            ids = torch.from_numpy(corpus.ids[a:b].astype("int64"))[None].cuda()
            alone = model(input_ids=ids).logits[0].float()
            diffs.append(float((logits[pos : pos + b - a] - alone).abs().max()))
            pos += b - a
    assert diffs[0] <= tol
    assert min(diffs[1:]) > LEAK, diffs
