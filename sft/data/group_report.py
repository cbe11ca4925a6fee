"""`sft-data stats` with `collator.group_by`: what is packed with what, per group mode.

For the config's packing strategy, the same training pieces planned with no grouping,
`group_mode=together` and `group_mode=apart`: packs, efficiency, how many packs of several
samples hold more than one value (sft/data/grouping.py's `group_stats`), values per pack and
optimizer steps per epoch.

Invariant: the three plans see the same pieces, seed and sizes; only the group mode differs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sft.data.grouping import GroupMode


def grouping_stats(loaded: Any, micro_batch_size: int, common: dict) -> dict:
    """For the config's packing: packs, efficiency, mixing and steps per epoch with no grouping,
    group_mode=together and group_mode=apart; `loaded` is sft-data's `Loaded` (group_by set)."""
    cfg, data = loaded.cfg, loaded.data
    out: dict[str, Any] = {
        "group_by": cfg.collator.group_by,
        "groups": len(data.group_names),
        "modes": {},
    }
    for mode in ("none", *GroupMode.values()):
        kwargs = (
            {"group_by": "", "group_mode": "together"} if mode == "none" else {"group_mode": mode}
        )
        packing = dataclasses.replace(cfg.collator, **kwargs).build(cfg.data.max_length)
        groups = {} if mode == "none" else loaded.groups
        rows, _ = packing.rows(data.train, data.tokens.targets, seed=cfg.seed, epoch=0, **groups)
        plan = packing.plan(
            data.train, data.tokens.targets, micro_batch_size=micro_batch_size, **common, **groups
        )
        tokens = sum(b - a for row in rows for a, b, _ in row)
        out["modes"][mode] = {
            **packing.group_stats(rows, data.groups),
            "efficiency": tokens / (len(rows) * packing.capacity),
            "steps_per_epoch": len(plan),
        }
    return out


def print_grouping(g: dict):
    """The rich table of `grouping_stats`."""
    from rich.table import Table

    table = Table(title=f"what is packed with what: collator.group_by={g['group_by']}")
    for col in ("group_mode", "packs", "efficiency", "mixed packs", "groups/pack", "steps"):
        table.add_column(col, justify="right" if col != "group_mode" else "left")
    for mode, r in g["modes"].items():
        table.add_row(
            mode,
            f"{r['packs']:,}",
            f"{r['efficiency']:.2%}",
            f"{r['mixed_fraction']:.1%} of {r['multi_sample_packs']:,}",
            f"{r['groups_per_pack']:.2f}",
            str(r["steps_per_epoch"]),
        )
    return table
