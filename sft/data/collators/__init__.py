"""Collators turn a planned micro-batch (rows of segments) into model inputs plus bookkeeping."""

from sft.data.collators.packing import PackingCollator
from sft.data.collators.padding import PaddingCollator
from sft.data.collators.padding_free import PaddingFreeCollator

__all__ = ["PackingCollator", "PaddingCollator", "PaddingFreeCollator", "build_collator"]


def build_collator(
    kind: str,
    *,
    pad_id: int,
    pad_to_multiple_of: int = 1,
    flatten: bool = True,
    isolate: bool = True,
):
    """The collator for `collator.name`, from plain arguments."""
    if kind == "padding":
        return PaddingCollator(pad_id=pad_id, pad_to_multiple_of=pad_to_multiple_of)
    if kind == "padding_free":
        return PaddingFreeCollator(pad_id=pad_id)
    return PackingCollator(
        pad_id=pad_id, flatten=flatten, isolate=isolate, pad_to_multiple_of=pad_to_multiple_of
    )
