"""Fixtures for the evaluation tests: a tiny saved model and the offline benchmark data."""

from __future__ import annotations

from pathlib import Path

import pytest

from sft.eval.paths import data_root


@pytest.fixture(scope="session")
def eval_data() -> Path:
    """The benchmark data folder (../shared/data or $SFT_EVAL_DATA); skip when absent."""
    root = data_root()
    if not (root / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"benchmark data not found at {root} (set SFT_EVAL_DATA)")
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved 2-layer random Llama with the byte-level ChatML tokenizer."""
    from sft.models.tiny import build_tiny_model, build_tiny_tokenizer

    out = tmp_path_factory.mktemp("tiny-model")
    build_tiny_model("llama", hidden_size=32, num_heads=4, num_kv_heads=2).save_pretrained(out)
    build_tiny_tokenizer().save_pretrained(out)
    return out


@pytest.fixture
def run_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A training run dir whose final/ is the tiny model (a symlink: nothing is copied)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "final").symlink_to(tiny_model_dir, target_is_directory=True)
    (run / "summary.json").write_text('{"run_name": "tiny"}')
    return run
