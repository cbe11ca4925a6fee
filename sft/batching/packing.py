"""`collator=packing`: samples packed into rows of `pack_length` tokens that never see each other.

    pieces  A[3] B[2] C[3] D[4] E[2]        capacity 8, strategy bfd
    rows    [D D D D C C C .]  [A A A B B E E .]       (. = room left; no padding computed with
    attention per sample (varlen cu_seq_lens, or a block-diagonal mask), positions restart at 0

`strategy=random_concat` is the seed paper's random packing: shuffle, concatenate, cut every
`pack_length` tokens (fragments without a target are dropped and counted).

`group_by=FIELD` decides what is packed with what (any strategy; sft/data/grouping.py):
`group_mode=together` packs only samples of one value of the data rows' FIELD into a row,
`group_mode=apart` mixes the values in every row as evenly as the plan allows.

Invariant: no attention, position or target crosses a sample boundary in a row; every token
of every piece is in exactly one row per epoch (random_concat: except counted target-less
fragments); a row holds at most `capacity` tokens; with group_by=FIELD and group_mode=together
every row holds one value of FIELD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sft.batching.base import FLAT_ATTENTION, Collate
from sft.data.grouping import GroupMode, group_stats
from sft.data.packing import PackStrategy
from sft.data.plan import Row, concat_rows, packed_rows, plan_steps
from sft.errors import UserError

# the seed paper's names for its two packings (the columns of its tables)
LABELS = {
    PackStrategy.random_concat: "random packing",
    PackStrategy.bfd: "greedy packing",
    PackStrategy.ffd: "greedy packing",
}


@dataclass
class PackingConfig:
    """Pack samples into rows of `pack_length` tokens; samples never attend to each other."""

    name: str = "packing"
    """The option's name, as written in config.yaml (set by the option, not by the user)."""
    strategy: PackStrategy = PackStrategy.bfd
    """How rows are filled: bfd (best-fit decreasing), ffd (the paper's greedy packing),
    first_fit_shuffle, next_fit, or random_concat (the paper's random packing)."""
    pack_length: int = 0
    """Tokens per row; 0 = data.max_length. Must be >= data.max_length unless data.overlong=split."""
    pad_to_multiple_of: int = 1
    """Round the row length up to a multiple of this when rows are not flattened (sdpa, eager)."""
    replan_each_epoch: bool = False
    """Plan the packs anew with another seed every epoch (changes only first_fit_shuffle's)."""
    group_by: str = ""
    """A top-level field of the data rows (e.g. FLAN-CoT's `source`) whose value decides what is
    packed with what (see group_mode); "" = no grouping. A training row without it is an error."""
    group_mode: GroupMode = GroupMode.together
    """With group_by: together = every pack holds one value of the field; apart = packs mix the
    values as evenly as the plan allows (as many packs and tokens, hence the same efficiency and
    steps, as no grouping)."""

    def __post_init__(self) -> None:
        if self.pack_length < 0:
            raise UserError("collator.pack_length must be >= 0 (0 = data.max_length)")
        if self.pad_to_multiple_of < 1:
            raise UserError("collator.pad_to_multiple_of must be >= 1")
        if self.group_by != self.group_by.strip():
            raise UserError(f"collator.group_by={self.group_by!r} has surrounding spaces")
        if not self.group_by and GroupMode(self.group_mode) != GroupMode.together:
            raise UserError(
                f"collator.group_mode={GroupMode(self.group_mode).value} groups nothing without "
                "collator.group_by=FIELD (a top-level field of the data rows, e.g. source)"
            )

    def check(self, data, model) -> None:
        """pack_length >= data.max_length, or every sample could not fit a row."""
        capacity = self.pack_length or data.max_length
        if capacity < data.max_length and data.overlong != "split":
            raise UserError(
                f"collator.pack_length={capacity} < data.max_length={data.max_length}: samples "
                "could not fit a pack; raise pack_length or lower data.max_length"
            )

    def build(self, max_length: int) -> Packing:
        return Packing(
            self.pack_length or max_length,
            PackStrategy(self.strategy),
            self.pad_to_multiple_of,
            self.replan_each_epoch,
            self.group_by,
            GroupMode(self.group_mode),
        )


class Packing:
    def __init__(
        self,
        capacity: int,
        strategy: PackStrategy,
        pad_to_multiple_of: int,
        replan: bool,
        group_by: str = "",
        group_mode: GroupMode = GroupMode.together,
    ) -> None:
        self.capacity = capacity
        self.strategy = strategy
        self.pad_to_multiple_of = pad_to_multiple_of
        self.replan_each_epoch = replan
        self.group_by = group_by  # the data rows' field; its ids come as `groups` (one per piece)
        self.group_mode = group_mode

    def attention(self, requested: str, cuda: bool) -> str:
        from sft.models.build import resolve_attn_implementation

        return resolve_attn_implementation(requested, "varlen", cuda)

    def _groups(self, groups: np.ndarray | None) -> np.ndarray | None:
        if not self.group_by:
            return None
        if groups is None:
            raise UserError(
                f"collator.group_by={self.group_by}: the data carry no group ids (prepare_data "
                "must be called with group_by)"
            )
        return groups

    def rows(
        self, pieces, targets, *, seed: int, epoch: int, groups: np.ndarray | None = None
    ) -> tuple[list[Row], int]:
        """The packed rows of an epoch and the number of dropped fragments (random_concat);
        `groups` (one id per piece) is used when the config sets group_by."""
        groups = self._groups(groups)
        mode = self.group_mode
        if self.strategy is PackStrategy.random_concat:
            return concat_rows(
                pieces,
                targets,
                capacity=self.capacity,
                seed=seed,
                epoch=epoch,
                groups=groups,
                group_mode=mode,
            )
        rows = packed_rows(
            pieces,
            capacity=self.capacity,
            strategy=self.strategy,
            seed=seed,
            epoch=epoch,
            replan_each_epoch=self.replan_each_epoch,
            groups=groups,
            group_mode=mode,
        )
        return rows, 0

    def group_stats(self, rows: list[Row], groups: np.ndarray) -> dict:
        """How the rows mix the groups of their pieces (sft/data/grouping.py's `GroupStats`)."""
        packs = [np.array([p for _, _, p in row], dtype=np.int64) for row in rows]
        return group_stats(packs, groups).to_dict()

    def plan(
        self,
        pieces,
        targets,
        *,
        micro_batch_size,
        grad_accum,
        world_size,
        seed,
        epoch,
        groups: np.ndarray | None = None,
    ):
        rows, dropped = self.rows(pieces, targets, seed=seed, epoch=epoch, groups=groups)
        return plan_steps(
            rows,
            micro_batch_size=micro_batch_size,
            grad_accum=grad_accum,
            world_size=world_size,
            capacity=self.capacity,
            dropped_fragments=dropped,
        )

    def eval_rows(self, pieces: np.ndarray, targets: np.ndarray) -> list[Row]:
        # whole samples only: random_concat's validation rows are packed best-fit
        strategy = (
            PackStrategy.bfd if self.strategy is PackStrategy.random_concat else self.strategy
        )
        return packed_rows(pieces, capacity=self.capacity, strategy=strategy, seed=0, epoch=0)

    def collator(self, pad_id: int, attn: str) -> Collate:
        from sft.data.collators import PackingCollator

        return PackingCollator(
            pad_id=pad_id,
            flatten=attn in FLAT_ATTENTION,
            pad_to_multiple_of=self.pad_to_multiple_of,
        )

    def describe(self) -> dict:
        label = LABELS.get(self.strategy, f"packing {self.strategy}")
        out = {
            "collator": "packing",
            "strategy": str(self.strategy),
            "capacity": self.capacity,
            "label": label,
        }
        if self.group_by:  # absent without grouping: old records and checkpoints stay equal
            out["group_by"] = self.group_by
            out["group_mode"] = str(self.group_mode)
            out["label"] = f"{label}, {self.group_mode} by {self.group_by}"
        return out

    def memory_rows(self, micro_batch_size: int, longest: int) -> tuple[int, int]:
        return micro_batch_size, self.capacity

    def oom_rows(self, micro_batch_size: int) -> tuple[str, str]:
        return f"{micro_batch_size} packs of {self.capacity} tokens", "collator.pack_length"
