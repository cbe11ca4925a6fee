"""Where the shipped NER datasets live, per dataset and split.

The data root is `$SFT_DATA_DIR` if set, else `<project root>/../shared/data`. Each dataset's
canonical file per split is its span jsonl (`<root>/<dataset>/spans/<split>.jsonl`).

Invariant: `dataset_file` returns an existing file or raises `UserError` saying which splits the
dataset has and where it looked; it never guesses a different split.
"""

from __future__ import annotations

import os
from pathlib import Path

from sft.errors import UserError

SPLITS: dict[str, tuple[str, ...]] = {
    "conll2003": ("train", "dev", "test"),
    "wnut17": ("train", "dev", "test"),
    "genia": ("dev", "test"),  # no GENIA train split is available offline
}


def data_root() -> Path:
    env = os.environ.get("SFT_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def dataset_file(dataset: str, split: str) -> Path:
    """The span jsonl of `dataset`/`split` under `data_root()`."""
    if dataset not in SPLITS:
        raise UserError(
            f"unknown NER dataset {dataset!r}; choose one of {sorted(SPLITS)} or pass a file path"
        )
    if split not in SPLITS[dataset]:
        raise UserError(f"{dataset} has no {split!r} split; it has {list(SPLITS[dataset])}")
    path = data_root() / dataset / "spans" / f"{split}.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found; set SFT_DATA_DIR to the folder holding {dataset}/")
    return path


def infer_dataset(path: str | Path) -> str:
    """The dataset name found among the parts of `path` (e.g. `.../wnut17/spans/train.jsonl`)."""
    parts = [p.lower() for p in Path(path).parts]
    found = [name for name in SPLITS if name in parts]
    if len(found) != 1:
        raise UserError(
            f"cannot tell the NER dataset from the path {path}; pass dataset= one of "
            f"{sorted(SPLITS)} (or a types file)"
        )
    return found[0]
