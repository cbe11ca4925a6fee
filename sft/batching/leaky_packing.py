"""`collator=leaky_packing`: the seed paper's packed rows, where samples attend to each other.

    row [A A A B B C C C]   all-ones attention mask, positions 0..7 running across samples:
                            B sees A, C sees A and B (causal over the whole row)

For measuring what the leak costs only; a warning says so at start-up. Rows and targets are
those of `collator=packing` with the same strategy; attention is sdpa or eager (a varlen or
flash backend would isolate the samples again and is refused at composition).

Invariant: same rows, tokens and targets as Packing; only attention and positions differ.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sft.batching.base import FLAT_ATTENTION, Collate
from sft.batching.packing import Packing, PackingConfig
from sft.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class LeakyPackingConfig(PackingConfig):
    """Packing WITHOUT isolation: samples of a row attend to each other (comparison only)."""

    name: str = "leaky_packing"
    """The option's name, as written in config.yaml (set by the option, not by the user)."""

    def check(self, data, model) -> None:
        """Packing's rules, and an attention backend that can leak (a dense mask)."""
        super().check(data, model)
        if model.attn_implementation in FLAT_ATTENTION:
            raise UserError(
                f"collator=leaky_packing needs a dense-mask attention (sdpa or eager), not "
                f"model.attn_implementation={model.attn_implementation}, which would isolate "
                "the samples again"
            )

    def build(self, max_length: int) -> LeakyPacking:
        packing = super().build(max_length)
        return LeakyPacking(
            packing.capacity,
            packing.strategy,
            packing.pad_to_multiple_of,
            packing.replan_each_epoch,
            packing.group_by,
            packing.group_mode,
        )


class LeakyPacking(Packing):
    def attention(self, requested: str, cuda: bool) -> str:
        log.warning(
            "collator=leaky_packing: packed samples ATTEND TO EACH OTHER (the seed paper's leaky "
            "setup); use it only to measure that leak"
        )
        from sft.models.build import resolve_attn_implementation

        return resolve_attn_implementation(requested, "sdpa", cuda)

    def collator(self, pad_id: int, attn: str) -> Collate:
        from sft.data.collators import LeakyPackingCollator

        return LeakyPackingCollator(
            pad_id=pad_id, flatten=False, pad_to_multiple_of=self.pad_to_multiple_of
        )

    def describe(self) -> dict:
        out = super().describe()
        grouped = f", {self.group_mode} by {self.group_by}" if self.group_by else ""
        return {**out, "collator": "leaky_packing", "label": "leaky packing" + grouped}
