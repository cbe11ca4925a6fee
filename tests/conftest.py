"""Shared fixtures: tiny tokenizer/model, the offline data folder, a fresh run dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SFT_DATA_DIR", ROOT / ".." / "shared" / "data")).resolve()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"offline datasets not found at {SHARED_DATA} (set SFT_DATA_DIR)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from sft.models.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tokenization caches go to a per-session folder, never the user's cache."""
    cache = tmp_path_factory.getbasetemp() / "sft-cache"
    monkeypatch.setenv("SFT_CACHE_TOKENIZED", str(cache))
