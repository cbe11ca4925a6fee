"""Out of memory: one actionable line, exit code 4, and the launcher's summary names the rank.

The OOM is raised by the tests' fault hooks, SFT_TEST_FAULT="oom@<step>[:<rank>]" (a
torch.OutOfMemoryError where the forward pass would run; tests/reliability/faults.py).
"""

from __future__ import annotations

import json
import re

import pytest

from sft.oom import oom_advice
from sft.trainer import EXIT_OOM

from .conftest import TINY, run_train


def test_advice_names_every_knob_cheapest_first():
    msg = oom_advice(
        rank=3,
        step=7,
        micro_batch_size=4,
        grad_accum=2,
        rows="4 packs of 4096 tokens",
        length_key="collator.pack_length",
        length=4096,
        zero_stage=0,
        offload="none",
        gradient_checkpointing=False,
        cuda=False,
    )
    assert msg.startswith(
        "out of memory on rank 3 at step 7: micro-batch of 4 packs of 4096 tokens, ZeRO stage 0"
    )
    tips = [
        "model.gradient_checkpointing=true",
        "train.micro_batch_size=2 train.grad_accum=4",
        "collator.pack_length=2048",
        "distributed=zero3",
    ]
    assert all(t in msg for t in tips) and [msg.index(t) for t in tips] == sorted(
        msg.index(t) for t in tips
    )
    assert "\n" not in msg


def test_advice_moves_on_once_the_cheap_knobs_are_used():
    msg = oom_advice(
        rank=0,
        step=1,
        micro_batch_size=1,
        grad_accum=8,
        rows="1 samples of up to 2048 tokens",
        length_key="data.max_length",
        length=2048,
        zero_stage=3,
        offload="none",
        gradient_checkpointing=True,
        cuda=False,
    )
    assert "gradient_checkpointing=true;" in msg and "model.gradient_checkpointing=true" not in msg
    assert "train.micro_batch_size" not in msg and "data.max_length=1024" in msg
    assert "distributed=zero3_offload" in msg
    msg = oom_advice(
        rank=0,
        step=1,
        micro_batch_size=1,
        grad_accum=8,
        rows="1 samples of up to 2048 tokens",
        length_key="data.max_length",
        length=2048,
        zero_stage=3,
        offload="cpu",
        gradient_checkpointing=True,
        cuda=False,
    )
    assert "zero3_offload" not in msg and "offload cpu" in msg


@pytest.mark.slow
def test_oom_exits_4_with_one_line_and_records_the_error_file(tmp_path):
    error_file = tmp_path / "error.json"
    r = run_train(
        tmp_path / "run",
        *TINY,
        "train.max_steps=3",
        env={"SFT_TEST_FAULT": "oom@2", "TORCHELASTIC_ERROR_FILE": str(error_file)},
    )
    assert r.returncode == EXIT_OOM, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr
    assert "error: out of memory on rank 0 at step 2: micro-batch of 2 samples" in errors[0]
    assert "gradient_checkpointing=false" in errors[0] and "ZeRO stage 0" in errors[0]
    recorded = json.loads(error_file.read_text())["message"]["message"]
    assert "out of memory on rank 0 at step 2" in recorded


@pytest.mark.slow
@pytest.mark.distributed
def test_launcher_summary_names_the_rank_that_ran_out_of_memory(tmp_path):
    r = run_train(
        tmp_path / "run", *TINY, "train.max_steps=3", processes=2, env={"SFT_TEST_FAULT": "oom@2:1"}
    )
    assert r.returncode != 0
    # torch elastic lists every failed rank under "Failures:" and "Root Cause"; which one it calls
    # the root cause is the earliest error-file time, in whole seconds, so rank 0's follow-on
    # gloo error can tie with rank 1's OOM and win: look for rank 1's block in either list
    summary = r.stderr[r.stderr.index("Failures:") :]
    blocks = re.split(r"\n\[\d+\]:\n", summary)
    assert any(
        "rank      : 1 (local_rank: 1)" in b
        and "exitcode  : 4" in b
        and "out of memory on rank 1 at step 2" in b
        for b in blocks
    ), r.stderr[-3000:]
