"""`data.*`: where samples come from and how they become token ids and targets.

A structured config registered as `base_data` (sft/config.py); its field docstrings are the
`data=` reference of docs/configuration.md.

Invariant: an instance has passed `__post_init__`: lengths and fractions in range, and no
`data.path` under `data=demo` (which would keep the demo's settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sft.choice import Combine, DataFormat, Overlong, TrainOn, Turns
from sft.errors import UserError


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise UserError(msg)


@dataclass
class DataConfig:
    """Where samples come from and how they become token ids and targets."""

    name: str = ""
    """The option's name (set by configs/data/*.yaml; demo and file are checked, see below)."""
    path: str = ""
    """Local file/folder, datasets save_to_disk folder or hub id; "" = the built-in demo data."""
    split: str = "train"
    """Split to read from a hub id or a datasets folder."""
    format: DataFormat = DataFormat.auto
    """Row format: messages, sharegpt, alpaca, prompt_completion, or auto (detected per row)."""
    val_path: str = ""
    """A separate validation file (never cut by `limit`, never trained on)."""
    val_fraction: float = 0.0
    """Fraction of the rows held out for validation (seeded) when no val_path is given."""
    val_max_samples: int = 256
    """At most this many validation rows from val_fraction."""
    val_seed: int = -1
    """Seed of the val_fraction draw (-1 = the run's seed); fixed, every seed of a sweep
    validates on the same rows, so their spread is training's, not the split's."""
    max_length: int = 2048
    """Longest sample in tokens; longer ones follow `overlong`."""
    overlong: Overlong = Overlong.truncate
    """What happens to samples longer than max_length: truncate, drop, or split into pieces."""
    train_on: TrainOn = TrainOn.assistant
    """Which tokens are trained: assistant turns, all tokens, or the last assistant turn."""
    limit: int = 0
    """Keep only the first N rows of `path` (0 = all); validation rows are not counted."""
    sample: int = 0
    """Keep a seeded random N of the rows instead, in file order (0 = off; not with limit): the
    same rows for every run seed (`sample_seed`), so seeds change only the split and order."""
    sample_seed: int = 0
    """The seed of `sample`'s draw."""
    eval_by: str = ""
    """The rows' field whose values split the validation loss: each value's token-mean loss is
    logged beside the overall one (`eval_loss_by` in metrics.jsonl and summary.json)."""
    num_proc: int = 1
    """Processes for tokenization."""
    max_bad_fraction: float = 0.0
    """Fraction of bad rows skipped (and counted) before the run stops at the first one."""
    system_prompt: str | None = None
    """A system message prepended to every conversation that has none."""
    demo_size: int = 3000
    """Rows of the built-in demo data (path="")."""
    demo_tasks: list[str] = field(default_factory=list)
    """Tasks the demo data draws from (sft/data/demo.py's TASKS); empty = the default mix (DEFAULT_TASKS)."""
    turns: Turns = Turns.all
    """Keep every training conversation, or only single-turn (one assistant turn) or multi-turn
    ones (sft/data/turns.py); the others are counted in data_report.json."""
    combine: Combine = Combine.none
    """Combine single-turn training conversations into conversations of `combine_turns`
    exchanges: random (a seeded shuffle) or same_tag (within each value of `combine_tag`)."""
    combine_turns: int = 4
    """Exchanges per combined conversation (the last of a group may hold fewer)."""
    combine_tag: str = "source"
    """The rows' field whose values group conversations under combine=same_tag."""
    builder: str = ""
    """"module:function" returning rows with "messages" (e.g. the NER conversions)."""
    builder_args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the builder."""

    def __post_init__(self) -> None:
        _check(self.max_length > 1, f"data.max_length must be > 1, got {self.max_length}")
        _check(
            0.0 <= self.val_fraction < 1.0,
            f"data.val_fraction must be in [0, 1), got {self.val_fraction}",
        )
        _check(
            0.0 <= self.max_bad_fraction <= 1.0,
            f"data.max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}",
        )
        _check(self.num_proc >= 1, f"data.num_proc must be >= 1, got {self.num_proc}")
        _check(self.limit >= 0, f"data.limit must be >= 0, got {self.limit}")
        _check(self.sample >= 0, f"data.sample must be >= 0, got {self.sample}")
        _check(
            self.val_seed >= -1,
            f"data.val_seed must be >= 0 (-1 = the run seed), got {self.val_seed}",
        )
        _check(
            not (self.sample and self.limit),
            f"data.sample={self.sample} with data.limit={self.limit}: choose one (sample draws "
            "N rows at random, limit keeps the first N)",
        )
        _check(
            not (self.name == "demo" and self.path),
            f"data.path={self.path} with data=demo would keep the demo's settings (format, "
            "max_bad_fraction, val_fraction, max_length): use data=file data.path=...",
        )
        _check(
            self.combine_turns >= 2, f"data.combine_turns must be >= 2, got {self.combine_turns}"
        )
        _check(
            self.combine == Combine.none or self.train_on != TrainOn.last_assistant,
            f"data.combine={self.combine} with data.train_on=last_assistant would train only the "
            "last exchange of each combined conversation: use train_on=assistant",
        )
        from sft.data.demo import TASKS

        unknown = sorted(set(self.demo_tasks) - set(TASKS))
        _check(
            not unknown, f"data.demo_tasks: unknown task(s) {unknown}; choose from {sorted(TASKS)}"
        )
        _check(
            not (self.name == "file" and not self.path and not self.builder),
            "data=file needs data.path=FILE (a .jsonl/.json/.parquet file, a folder or a hub id)",
        )
