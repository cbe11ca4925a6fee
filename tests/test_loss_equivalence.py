"""One loss for padding and packing, through the real trainer (Recipe) on the tiny model.

- The step-0 validation loss is the same under padding, packing (bfd, random_concat) and
  padding_free, and on the sdpa, eager and varlen backends.
- For the same samples in a step, the training loss, the gradient norm and the weights after one
  step are the same under padding and padding_free (same plan), and under packing and padding when
  one step holds the whole (tiny) dataset.
- `loss_normalization` token / sample / micro_batch_mean reproduce hand computations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sft.cli_config import compose_job
from sft.trainer import Recipe

TOL = 1e-5
# small and fast: short demo samples (longer ones dropped), tiny model, no side outputs
BASE = [
    "model=tiny",
    "data=demo",
    "data.demo_size=200",
    "data.max_length=512",
    "data.overlong=drop",
    "data.max_bad_fraction=0.1",
    "train.progress=false",
    "train.report_to=none",
]


def _recipe(run_dir: Path, overrides: list[str]) -> Recipe:
    cfg, yaml = compose_job([*BASE, *overrides, f"run_dir={run_dir}"])
    return Recipe(cfg, yaml)


def _train(run_dir: Path, overrides: list[str]) -> tuple[list[dict], dict]:
    recipe = _recipe(run_dir, overrides)
    try:
        assert recipe.train() == 0
    finally:
        recipe.close()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return rows, load_file(str(run_dir / "final" / "model.safetensors"))


def _step0_eval(rows: list[dict]) -> float:
    return next(r["eval_loss"] for r in rows if "eval_loss" in r and r["step"] == 0)


def _step1(rows: list[dict]) -> dict:
    return next(r for r in rows if r.get("step") == 1 and "loss" in r)


def _max_weight_diff(w1: dict, w2: dict) -> float:
    assert w1.keys() == w2.keys()
    return max(float((w1[k] - w2[k]).abs().max()) for k in w1)


EVAL_SETUPS = {
    "padding-sdpa": ["collator=padding", "model.attn_implementation=sdpa"],
    "padding-eager": ["collator=padding", "model.attn_implementation=eager"],
    "padding-varlen": ["collator=padding", "model.attn_implementation=varlen"],
    "packing-bfd-varlen": ["collator=packing", "model.attn_implementation=varlen"],
    "packing-bfd-sdpa": ["collator=packing", "model.attn_implementation=sdpa"],
    "packing-bfd-eager": ["collator=packing", "model.attn_implementation=eager"],
    "packing-random_concat": ["collator=packing", "collator.strategy=random_concat"],
    "padding_free": ["collator=padding_free"],
}


@pytest.mark.slow
def test_step0_eval_loss_is_identical_across_collators_and_backends(tmp_path):
    common = [
        "train.max_steps=1",
        "train.eval_at_start=true",
        "data.val_fraction=0.1",
        "train.eval_micro_batch_size=4",
        "train.micro_batch_size=2",
    ]
    losses, tokens = {}, {}
    for name, overrides in EVAL_SETUPS.items():
        rows, _ = _train(tmp_path / name, [*common, *overrides])
        losses[name] = _step0_eval(rows)
        tokens[name] = next(r["eval_tokens"] for r in rows if "eval_tokens" in r)
    assert len(set(tokens.values())) == 1 and min(tokens.values()) > 1000  # same targets, not a few
    ref = losses["padding-sdpa"]
    assert 3.0 < ref < 10.0  # a real loss of an untrained model over 259 tokens (ln 259 = 5.56)
    for name, value in losses.items():
        assert abs(value - ref) <= TOL, (name, value, ref)


@pytest.mark.slow
def test_same_samples_same_step_padding_vs_padding_free(tmp_path):
    """Same plan (same samples in every micro-batch): same loss, grad norm and weights."""
    common = [
        "train.max_steps=2",
        "train.micro_batch_size=4",
        "train.grad_accum=2",
        "optim.lr=1e-3",
        "optim.warmup_ratio=0.0",
        "optim.schedule=constant",
    ]
    rows_a, w_a = _train(
        tmp_path / "padding", [*common, "collator=padding", "model.attn_implementation=sdpa"]
    )
    rows_b, w_b = _train(tmp_path / "padding_free", [*common, "collator=padding_free"])
    for step in (1, 2):
        a = next(r for r in rows_a if r.get("step") == step and "loss" in r)
        b = next(r for r in rows_b if r.get("step") == step and "loss" in r)
        assert (a["samples"], a["supervised_tokens"], a["tokens"]) == (
            b["samples"],
            b["supervised_tokens"],
            b["tokens"],
        )
        assert a["pad_tokens"] > 0 == b["pad_tokens"]
        assert not a.get("skipped") and not b.get("skipped")
        assert abs(a["loss"] - b["loss"]) <= TOL
        assert abs(a["grad_norm"] - b["grad_norm"]) <= TOL * max(1.0, a["grad_norm"])
    assert _max_weight_diff(w_a, w_b) <= TOL


@pytest.mark.slow
def test_same_samples_same_step_packing_vs_padding(tmp_path):
    """One optimizer step holding the whole tiny dataset: packing and padding train identically."""
    common = [
        "data.demo_size=32",
        "data.val_fraction=0.0",
        "train.max_steps=1",
        "optim.lr=1e-3",
        "optim.warmup_ratio=0.0",
        "optim.schedule=constant",
    ]
    rows_pad, w_pad = _train(
        tmp_path / "padding", [*common, "collator=padding", "train.micro_batch_size=64"]
    )
    # (random_concat is left out: a cut sample loses its context, so it is not the same step)
    results = {
        name: _train(
            tmp_path / name, [*common, "collator=packing", "train.micro_batch_size=64", *extra]
        )
        for name, extra in {
            "bfd-varlen": [],
            "bfd-sdpa": ["model.attn_implementation=sdpa"],
        }.items()
    }
    a = _step1(rows_pad)
    assert a["steps_per_epoch"] == 1 and a["samples"] >= 12  # the whole epoch is this one step
    for name, (rows, w) in results.items():
        b = _step1(rows)
        assert b["steps_per_epoch"] == 1 and not a.get("skipped") and not b.get("skipped")
        assert (a["samples"], a["supervised_tokens"], a["tokens"]) == (
            b["samples"],
            b["supervised_tokens"],
            b["tokens"],
        )
        assert abs(a["loss"] - b["loss"]) <= TOL, name
        assert abs(a["grad_norm"] - b["grad_norm"]) <= TOL * max(1.0, a["grad_norm"]), name
        assert _max_weight_diff(w_pad, w) <= TOL, name


def _hand_losses(recipe: Recipe, step_rows) -> list[tuple[float, int, list[float]]]:
    """Per micro-batch: (token-loss sum, target count, per-sample mean losses), with plain torch."""
    out = []
    model = recipe.acc.unwrap_model(recipe.model)
    with torch.no_grad():
        for rows in step_rows:
            batch, _ = recipe.collate(rows, recipe.data.tokens)
            logits = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                use_cache=False,
            ).logits.double()
            per_sample, total, count = [], 0.0, 0
            for r in range(logits.shape[0]):
                tgt = batch["targets"][r]
                keep = tgt != -100
                losses = F.cross_entropy(logits[r][keep], tgt[keep], reduction="none")
                per_sample.append(float(losses.mean()))
                total += float(losses.sum())
                count += int(keep.sum())
            out.append((total, count, per_sample))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["token", "sample", "micro_batch_mean"])
def test_loss_normalization_matches_a_hand_computation(tmp_path, norm):
    recipe = _recipe(
        tmp_path,
        [
            "collator=padding",
            "train.max_steps=1",
            "train.micro_batch_size=3",
            "train.grad_accum=3",
            f"train.loss_normalization={norm}",
        ],
    )
    try:
        hand = _hand_losses(recipe, recipe.epochs.plan(0).steps[0][0])
        assert len(hand) == 3
        assert recipe.train() == 0
    finally:
        recipe.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = _step1(rows)["loss"]
    if norm == "token":
        want = sum(t for t, _, _ in hand) / sum(c for _, c, _ in hand)
    elif norm == "sample":
        want = float(np.mean([s for _, _, ps in hand for s in ps]))
    else:
        want = float(np.mean([t / c for t, c, _ in hand]))
    assert abs(logged - want) <= TOL
    # the three normalisations really differ on this step (the test would catch a mix-up)
    means = {
        sum(t for t, _, _ in hand) / sum(c for _, c, _ in hand),
        float(np.mean([s for _, _, ps in hand for s in ps])),
        float(np.mean([t / c for t, c, _ in hand])),
    }
    assert len({round(m, 4) for m in means}) == 3
