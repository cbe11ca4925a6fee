"""The chunked loss equals the full one: losses, unit sums and every gradient, to float rounding.

- `ChunkedLinearCrossEntropy` against autograd through `F.cross_entropy(h @ W.T + b)`, with and
  without bias and per-target weights, chunk sizes that do and do not divide N, and no grad.
- `micro_batch_loss` with impl=chunked against impl=full on real micro-batches of the padding,
  packing and padding_free collators, for every loss normalisation (chunks of 7 targets, so
  every micro-batch spans many chunks).
- `auto` resolves to chunked for large vocabularies only; a trained run records the impl.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from sft.cli_config import compose_job
from sft.loss import (
    AUTO_CHUNK_VOCAB,
    ChunkedLinearCrossEntropy,
    cheaper_impl,
    micro_batch_loss,
    resolve_impl,
)
from sft.trainer import Recipe

TOL = 1e-6


def _reference(h, w, b, t, weights):
    losses = F.cross_entropy(F.linear(h, w, b).float(), t, reduction="none")
    return (losses if weights is None else losses * weights).sum(), losses


@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_chunked_function_matches_autograd(chunk, with_bias, weighted):
    g = torch.Generator().manual_seed(chunk * 4 + with_bias * 2 + weighted)
    n, hidden, vocab = 37, 12, 53
    h = torch.randn(n, hidden, generator=g, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=g, requires_grad=True)
    b = torch.randn(vocab, generator=g, requires_grad=True) if with_bias else None
    t = torch.randint(0, vocab, (n,), generator=g)
    weights = torch.rand(n, generator=g) if weighted else None
    leaves = [x for x in (h, w, b) if x is not None]

    ref_total, ref_losses = _reference(h, w, b, t, weights)
    ref_grads = torch.autograd.grad(ref_total * 0.37, leaves)
    total, losses = ChunkedLinearCrossEntropy.apply(h, w, b, t, weights, chunk)
    grads = torch.autograd.grad(total * 0.37, leaves)

    assert not losses.requires_grad
    torch.testing.assert_close(losses, ref_losses.detach(), rtol=TOL, atol=TOL)
    torch.testing.assert_close(total, ref_total.detach(), rtol=TOL, atol=TOL)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=TOL)


def test_chunked_function_without_grad_only_computes_losses():
    h, w = torch.randn(9, 4), torch.randn(11, 4)
    t = torch.randint(0, 11, (9,))
    with torch.no_grad():
        total, losses = ChunkedLinearCrossEntropy.apply(h, w, None, t, None, 4)
    torch.testing.assert_close(losses, F.cross_entropy(h @ w.T, t, reduction="none"))
    assert not total.requires_grad


def test_auto_is_full_for_small_vocabularies_and_the_cheaper_one_per_micro_batch_above():
    assert resolve_impl("auto", 259) == "full"  # the tiny test model: bit-exact golden runs
    assert resolve_impl("auto", AUTO_CHUNK_VOCAB) == "auto"
    assert resolve_impl("full", 128_256) == "full"
    # Llama-3-8B in bf16 (head 128,256 x 4,096): a few targets are cheaper with full logits,
    # a packed row's thousands with chunks (the head's weight gradient then pays for itself)
    assert cheaper_impl(375, 128_256, 4096, 2, 512) == "full"
    assert cheaper_impl(4096, 128_256, 4096, 2, 512) == "chunked"
    # SmolLM2 in fp32 (49,152 x 576)
    assert cheaper_impl(100, 49_152, 576, 4, 512) == "full"
    assert cheaper_impl(1000, 49_152, 576, 4, 512) == "chunked"


def test_auto_picks_what_cheaper_impl_says_for_each_micro_batch(monkeypatch):
    from sft import loss as loss_mod

    picked = []
    real = loss_mod.cheaper_impl

    def spy(*args):
        picked.append(real(*args))
        return picked[-1]

    monkeypatch.setattr(loss_mod, "cheaper_impl", spy)
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=40_000, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    model = LlamaForCausalLM(cfg)
    for n in (4, 600):
        ids = torch.randint(0, 40_000, (1, n + 1))
        batch = {"input_ids": ids[:, :n], "position_ids": torch.arange(n)[None],
                 "targets": ids[:, 1:], "seq_idx": torch.zeros(1, n, dtype=torch.long)}  # fmt: skip
        auto, _ = micro_batch_loss(model, batch, "token", "auto", chunk_tokens=64)
        full, _ = micro_batch_loss(model, batch, "token", "full")
        torch.testing.assert_close(auto, full, rtol=TOL, atol=TOL)
    assert picked == ["full", "chunked"]


BASE = [
    "model=tiny",
    "data=demo",
    "data.demo_size=120",
    "data.max_length=512",
    "data.overlong=drop",
    "data.max_bad_fraction=0.1",
    "train.progress=false",
    "train.micro_batch_size=3",
]


def _first_micro_batch(tmp_path, collator: str):
    cfg, yaml = compose_job([*BASE, f"collator={collator}", f"run_dir={tmp_path / collator}"])
    recipe = Recipe(cfg, yaml)
    rows = recipe.epochs.plan(0).steps[0][0][0]
    batch, meta = recipe.collate(rows, recipe.data.tokens)
    return recipe, batch, meta


@pytest.mark.parametrize("collator", ["padding", "packing", "padding_free"])
def test_chunked_equals_full_on_every_collator_and_normalization(tmp_path, collator):
    recipe, batch, meta = _first_micro_batch(tmp_path, collator)
    try:
        model = recipe.model
        assert meta.targets > 3 * 7, "the micro-batch must span several chunks"
        params = [p for p in model.parameters() if p.requires_grad]
        for norm in ("token", "sample", "micro_batch_mean"):
            results = {}
            for impl in ("full", "chunked"):
                model.zero_grad(set_to_none=True)
                unit_sum, token_sum = micro_batch_loss(model, batch, norm, impl, chunk_tokens=7)
                unit_sum.backward()
                results[impl] = (unit_sum.detach(), token_sum, [p.grad.clone() for p in params])
            (u_full, t_full, g_full), (u_chk, t_chk, g_chk) = results["full"], results["chunked"]
            torch.testing.assert_close(u_chk, u_full, rtol=TOL, atol=TOL)
            torch.testing.assert_close(t_chk, t_full, rtol=TOL, atol=TOL)
            scale = max(float(g.abs().max()) for g in g_full)
            worst = max(float((a - b).abs().max()) for a, b in zip(g_chk, g_full, strict=True))
            assert worst / scale < TOL, (
                f"{collator}/{norm}: gradients differ by {worst:.2e} of {scale:.2e}"
            )
            assert any(float(g.abs().max()) > 0 for g in g_full)  # not vacuous
    finally:
        recipe.close()


@pytest.mark.slow
def test_a_chunked_run_trains_like_a_full_one_and_records_the_impl(tmp_path):
    runs = {}
    for impl in ("full", "chunked"):
        run_dir = tmp_path / impl
        cfg, yaml = compose_job(
            [*BASE, "collator=packing", "train.max_steps=3", f"loss.impl={impl}",
             "loss.chunk_tokens=16", f"run_dir={run_dir}"]
        )  # fmt: skip
        recipe = Recipe(cfg, yaml)
        try:
            assert recipe.train() == 0
        finally:
            recipe.close()
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        runs[impl] = [json.loads(x) for x in lines if '"loss"' in x]
        assert json.loads((run_dir / "summary.json").read_text())["loss_impl"] == impl
    for full, chunked in zip(runs["full"], runs["chunked"], strict=True):
        assert abs(full["loss"] - chunked["loss"]) < 1e-5
        assert abs(full["grad_norm"] - chunked["grad_norm"]) < 1e-5


def test_liger_is_refused_without_cuda_in_one_line():
    from sft.errors import UserError
    from sft.loss import loss_function

    with pytest.raises(UserError, match="loss.impl=liger needs CUDA; use loss.impl=chunked"):
        loss_function("token", "liger", 512, cuda=False)


@pytest.mark.gpu
def test_liger_equals_chunked_on_cuda():
    pytest.importorskip("liger_kernel", reason="liger-kernel is not installed")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=4096, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    model = LlamaForCausalLM(cfg).cuda()
    ids = torch.randint(0, 4096, (1, 257), device="cuda")
    batch = {"input_ids": ids[:, :256], "position_ids": torch.arange(256, device="cuda")[None],
             "targets": ids[:, 1:], "seq_idx": torch.zeros(1, 256, dtype=torch.long, device="cuda")}  # fmt: skip
    got = {}
    for impl in ("chunked", "liger"):
        model.zero_grad(set_to_none=True)
        total, _ = micro_batch_loss(model, batch, "token", impl, chunk_tokens=64)
        total.backward()
        got[impl] = (float(total), model.lm_head.weight.grad.clone())
    assert abs(got["liger"][0] - got["chunked"][0]) < 1e-3 * abs(got["chunked"][0])
    torch.testing.assert_close(got["liger"][1], got["chunked"][1], rtol=1e-3, atol=1e-4)
