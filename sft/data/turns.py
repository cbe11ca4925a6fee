"""Turn structure of the training conversations: which are kept, and which are combined.

    data.turns=all|single|multi    keep every conversation, or only those with exactly one /
                                   at least two assistant turns (the others are counted as
                                   `turns_not_single` / `turns_not_multi` in the data report)
    data.combine=random|same_tag   single-turn training conversations become conversations of
    data.combine_turns=K           K exchanges: `random` cuts a seeded shuffle every K; `same_tag`
    data.combine_tag=FIELD         does so within each value of the rows' FIELD (e.g. FLAN-CoT's
                                   `source`), so every combined conversation holds one task

Only conversations with the same system message (or none) are combined, and a combined
conversation starts with that system message, so nothing a member said is dropped. The last
conversation of a partition may hold fewer than K exchanges. Validation rows (`data.val_path`)
are never filtered or combined, nor are the rows `data.val_fraction` holds out: those are drawn
from the conversations read, before filtering and combining, with the same draw as a run without
these options (when every row tokenizes), so a combined run and its single-turn reference
validate on the same rows.

Invariant: every message of every kept training conversation appears exactly once in the output,
in its original order inside its member; every conversation read is either kept whole, merged
into exactly one combined conversation, or counted as filtered.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from sft.errors import UserError


@dataclass
class Conversation:
    """One conversation on its way to tokenization: messages, where it was read, its extras."""

    messages: list[dict]
    where: str
    is_val: bool = False
    group: object = None  # collator.group_by value (None without grouping)
    tag: object = None  # data.combine_tag value (same_tag only)
    eval_group: object = None  # data.eval_by value (None without data.eval_by)


def assistant_turns(messages: list[dict]) -> int:
    return sum(1 for m in messages if m.get("role") == "assistant")


def select_turns(convs: list[Conversation], turns: str) -> tuple[list[Conversation], list[str]]:
    """The conversations `data.turns` keeps (validation rows always), and where the others were."""
    if turns == "all":
        return convs, []
    keep, dropped = [], []
    for c in convs:
        n = assistant_turns(c.messages)
        if c.is_val or (n == 1 if turns == "single" else n >= 2):
            keep.append(c)
        else:
            dropped.append(c.where)
    return keep, dropped


def _system(messages: list[dict]) -> str | None:
    return messages[0]["content"] if messages and messages[0].get("role") == "system" else None


def _merge(members: list[Conversation]) -> Conversation:
    first = members[0]
    system = _system(first.messages)
    messages = [dict(m) for m in first.messages]
    for c in members[1:]:
        messages += [dict(m) for m in (c.messages[1:] if system is not None else c.messages)]
    groups = sorted({str(c.group) for c in members if c.group is not None})
    evals = sorted({str(c.eval_group) for c in members if c.eval_group is not None})
    return Conversation(
        messages=messages,
        where="+".join(c.where for c in members),
        is_val=False,
        group=None
        if first.group is None
        else (groups[0] if len(groups) == 1 else "+".join(groups)),
        tag=first.tag,
        eval_group="+".join(evals) if evals else None,
    )


def combine(
    convs: list[Conversation], mode: str, turns: int, seed: int
) -> tuple[list[Conversation], int]:
    """Combine the single-turn training conversations (see the module docstring); returns the
    conversations in a stable order (untouched ones first, as read) and how many members were
    merged into a conversation other than their own (rows read - rows out)."""
    if mode == "none":
        return convs, 0
    rest, parts = [], defaultdict(list)
    for i, c in enumerate(convs):
        if c.is_val or assistant_turns(c.messages) != 1:
            rest.append(c)
            continue
        key = (str(c.tag) if mode == "same_tag" else "", _system(c.messages) or "")
        parts[key].append(i)
    out = list(rest)
    merged = 0
    rng = np.random.default_rng([seed, 4099])
    for key in sorted(parts):
        idx = np.asarray(parts[key])[rng.permutation(len(parts[key]))]
        for a in range(0, len(idx), turns):
            members = [convs[int(i)] for i in idx[a : a + turns]]
            out.append(_merge(members) if len(members) > 1 else members[0])
            merged += len(members) - 1
    return out, merged


def shape_turns(convs: list[Conversation], turns: str, mode: str, k: int, seed: int, report):
    """`select_turns` then `combine`, counted in the data report (`report.add(reason, where)`
    for each filtered row; `combined_into_others` for the merged members)."""
    convs, dropped = select_turns(convs, turns)
    for where in dropped:
        report.add(f"turns_not_{turns}", where)
    convs, merged = combine(convs, mode, k, seed)
    if merged:
        report.counts["combined_into_others"] += merged
    if not any(not c.is_val for c in convs):
        raise UserError(
            f"data.turns={turns} keeps no training conversation ({len(dropped)} dropped)"
        )
    return convs
