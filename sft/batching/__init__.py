"""Batching: the `collator=` config group, padding vs packing, as one component per option.

    collator=padding        PaddingConfig      -> Padding       one sample per row, padded
    collator=packing        PackingConfig      -> Packing       samples packed into rows, isolated
    collator=padding_free   PaddingFreeConfig  -> PaddingFree   padding's micro-batches, flattened
    collator=leaky_packing  LeakyPackingConfig -> LeakyPacking  the seed paper's leaky packed rows

Each config class is a Hydra structured config (its keys and types are checked at composition)
with a `check(data)` for cross-field rules and a `build(max_length)` that returns the object
owning what the choice means: how an epoch's rows are planned (`plan`, `eval_rows`), how a
micro-batch is collated (`collator`), which attention it needs (`attention`), and how it is
described in summaries, checkpoints and advice (`describe`, `memory_rows`, `oom_rows`). No code
outside this package looks at which option was chosen.
"""

from sft.batching.base import Batching
from sft.batching.leaky_packing import LeakyPacking, LeakyPackingConfig
from sft.batching.packing import Packing, PackingConfig
from sft.batching.padding import Padding, PaddingConfig
from sft.batching.padding_free import PaddingFree, PaddingFreeConfig

BATCHING_CONFIGS = {
    "padding": PaddingConfig,
    "packing": PackingConfig,
    "padding_free": PaddingFreeConfig,
    "leaky_packing": LeakyPackingConfig,
}

__all__ = [
    "BATCHING_CONFIGS",
    "Batching",
    "LeakyPacking",
    "LeakyPackingConfig",
    "Packing",
    "PackingConfig",
    "Padding",
    "PaddingConfig",
    "PaddingFree",
    "PaddingFreeConfig",
]
