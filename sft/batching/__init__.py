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
from sft.data.packing import PackStrategy

BATCHING_CONFIGS = {
    "padding": PaddingConfig,
    "packing": PackingConfig,
    "padding_free": PaddingFreeConfig,
    "leaky_packing": LeakyPackingConfig,
}


def packing_of(collator, max_length: int) -> Packing:
    """The packing a collator config trains with, or the default packing when it does not pack
    (what `sft-data packs/stats` compare a padding config with)."""
    if isinstance(collator, PackingConfig):  # leaky_packing plans the same rows
        return collator.build(max_length)
    return PackingConfig().build(max_length)


def padding_and_packing(collator, max_length: int) -> tuple[list[Batching], int]:
    """([padding, packing], index of the config's own choice) for the memory plan: the config's
    own batching and its counterpart of the other kind (the default of that kind)."""
    own = collator.build(max_length)
    if isinstance(collator, PackingConfig):
        return [PaddingConfig().build(max_length), own], 1
    return [own, PackingConfig().build(max_length)], 0


def comparison(own: Batching) -> list[Batching]:
    """Padding and every packing strategy at `own`'s row length, for the steps-per-epoch table."""
    choices: list[Batching] = [PaddingConfig().build(own.capacity)]
    for s in PackStrategy.values():
        choices.append(PackingConfig(strategy=s, pack_length=own.capacity).build(own.capacity))
    return choices


def option_class(collator, where: str = "config.yaml"):
    """The config class of a `collator:` section as config.yaml records it (by its name)."""
    from sft.errors import UserError

    name = str(collator.get("name") or collator.get("_name") or "padding")
    if name not in BATCHING_CONFIGS:
        raise UserError(f"{where}: collator {name!r} is not one of {list(BATCHING_CONFIGS)}")
    return BATCHING_CONFIGS[name]


def label_of(collator: dict) -> str | None:
    """The report label ("padding", "greedy packing", ...) of a run's `collator:` section as
    config.yaml records it; None when it names no known option."""
    import dataclasses

    cls = BATCHING_CONFIGS.get(str(collator.get("name") or collator.get("_name")))
    if cls is None:
        return None
    known = {f.name for f in dataclasses.fields(cls)} - {"name"}
    kwargs = {k: v for k, v in collator.items() if k in known}
    return cls(**kwargs).build(max_length=2048).describe()["label"]


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
    "comparison",
    "label_of",
    "packing_of",
    "padding_and_packing",
]
