"""Session fixtures of the multi-process tests: a saved tiny model, 1-process references, a ZeRO-3 run.

Every run trains the same saved tiny model (random weights written once by `tiny_model_dir`):
`model=tiny` builds its weights in-process, and under DeepSpeed's ZeRO-3 init (weights
partitioned while they are created) the random init differs from a plain build, so a parity
test must load identical weights from disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.distributed.launching import COMMON, accelerate_cmd, check_ok, run, two_process_overrides


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny model and tokenizer saved as a plain HF folder (identical weights for every run)."""
    from sft.models.tiny import build_tiny_model, build_tiny_tokenizer

    out = tmp_path_factory.mktemp("tiny_model")
    build_tiny_model("llama", seed=0).save_pretrained(out)
    build_tiny_tokenizer().save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def reference_runs(tmp_path_factory, tiny_model_dir):
    """One-process runs with 2 micro-batches of 2 rows per step (grad_accum=2), cached per collator.

    Started through launch/accelerate/single.yaml. A 2-process run with grad_accum=1 has the same
    rows in the same micro-batches in every step (the plan cuts a step's rows into micro-batches
    before dealing them to ranks), so its global token-mean loss must be the same.
    """
    cache: dict[str, Path] = {}

    def get(collator: str) -> Path:
        if collator not in cache:
            out = tmp_path_factory.mktemp(f"ref_{collator}") / "run"
            proc = run(
                accelerate_cmd("single", 1)
                + [
                    *COMMON,
                    f"model.name_or_path={tiny_model_dir}",
                    f"collator={collator}",
                    "train.micro_batch_size=2",
                    "train.grad_accum=2",
                    f"run_dir={out}",
                ]
            )
            check_ok(proc, f"1-process {collator} reference")
            cache[collator] = out
        return cache[collator]

    return get


@pytest.fixture(scope="session")
def zero3_packing_run(tmp_path_factory, tiny_model_dir) -> Path:
    """ZeRO-3 packing run on 2 processes through zero3_probe.py (the trainer, then the live weights)."""
    out = tmp_path_factory.mktemp("zero3_packing") / "run"
    probe = str(Path(__file__).with_name("zero3_probe.py"))
    proc = run(
        accelerate_cmd("zero3", 2, script=probe)
        + two_process_overrides(tiny_model_dir, "zero3", "packing", out)
    )
    check_ok(proc, "ZeRO-3 packing run")
    return out
