"""The chunked loss on 2 processes trains like the full loss on 1 (sft/loss.py).

Under DDP every rank holds the LM head; under ZeRO-3 the head's weight is partitioned and is only
whole inside the head's forward, which is where the chunked loss runs (a pre-hook on the head), and
its gradient reaches DeepSpeed's partitioned reduction through autograd like any other. Each run
uses chunks of 7 targets, so every micro-batch spans several chunks, and must reproduce the
1-process full-loss reference's per-step and validation losses to 1e-5.
"""

from __future__ import annotations

import json

import pytest

from tests.distributed.launching import (
    accelerate_cmd,
    check_ok,
    clean_env,
    run,
    two_process_overrides,
)
from tests.distributed.test_parity import _assert_same_losses

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.mark.parametrize("distributed", ["ddp", "zero3"])
def test_chunked_loss_on_two_processes_matches_full_on_one(
    distributed, tmp_path, tiny_model_dir, reference_runs
):
    env = clean_env(ACCELERATE_USE_CPU="true") if distributed == "ddp" else clean_env()
    overrides = two_process_overrides(tiny_model_dir, distributed, "packing", tmp_path)
    proc = run(
        accelerate_cmd(distributed, 2) + [*overrides, "loss.impl=chunked", "loss.chunk_tokens=7"],
        env=env,
    )
    check_ok(proc, f"{distributed} chunked")
    assert json.loads((tmp_path / "summary.json").read_text())["loss_impl"] == "chunked"
    _assert_same_losses(tmp_path, reference_runs("packing"))
