"""`Choice`: the base of every config enum, so each list of allowed values has one source.

A `Choice` member is a `str` (it compares equal to its value, serialises to JSON as its value)
and prints as its value, so f-strings and YAML show `bfd`, never `PackStrategy.bfd`. Hydra checks
an override against the members at composition time.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def values(cls) -> list[str]:
        return [m.value for m in cls]
