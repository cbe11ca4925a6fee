"""From a data config to token arrays ready for planning: read, validate, tokenize, cut, split.

    rows (file/folder/hub/demo/builder)
      -> messages (formats.py; bad rows counted by reason, fail past data.max_bad_fraction)
      -> data.turns / data.combine (turns.py: filtered rows counted, single turns combined)
      -> ids + trained-token mask (tokenize.py; datasets.map: cached by fingerprint, num_proc, progress)
      -> flat arrays `ids`, `mask`, shifted `targets` (targets.py), per-row `offsets`
      -> pieces (row, start, end) after the overlong policy (truncate | drop | split)
      -> train / validation pieces (val_path, or a seeded val_fraction of rows: drawn before
         data.turns / data.combine when they are set, so the validation rows stay as read)

`data.limit` keeps the first N rows of `data.path` (`data.sample` a seeded random N, in file
order); the rows of `data.val_path` are never cut by them and never become training rows.
`data.eval_by=FIELD` gives each validation piece the id of its row's value of FIELD
(`PreparedData.val_groups`, names in `val_group_names`) for the per-value validation loss.

With `group_by=FIELD` (collator.group_by), each kept row's value of FIELD becomes an int id
(`PreparedData.groups`, one per training piece; `group_names` maps ids back to values): what the
planner needs to decide what is packed with what. A training row without FIELD is an error that
names it (file:line).

Invariant: every row read is either in exactly one piece list (train or val) or counted in the
report under one reason; `report.counts` adds up to the number of rows read, and no piece without
a trained target token is ever returned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sft.data.concat import split_overlong
from sft.data.fields import field_values, held_out, sample_rows
from sft.data.formats import RowError, to_messages
from sft.data.sources import BadRow, read_rows
from sft.data.targets import has_target, row_targets
from sft.data.turns import Conversation, shape_turns
from sft.errors import UserError

if TYPE_CHECKING:
    from sft.config import DataConfig

log = logging.getLogger(__name__)
TOKENIZE_VERSION = "1"  # bump when tokenization logic changes, to invalidate caches


@dataclass
class TokenArrays:
    """Concatenated tokens of all rows; row r is offsets[r]:offsets[r+1].

    ids: token ids; mask: trained tokens (for display); targets: what each position is trained
    to predict (-100 = nothing), made once by `sft.data.targets.row_targets`.
    """

    ids: np.ndarray  # int32 [total]
    mask: np.ndarray  # bool [total]
    targets: np.ndarray  # int32 [total]
    offsets: np.ndarray  # int64 [n_rows + 1]
    row_ids: list[str]


@dataclass
class DataReport:
    """What happened to every row: kept, or skipped with a reason and a few example locations."""

    rows_read: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        if len(self.examples[reason]) < 3:
            self.examples[reason].append(where)

    def to_dict(self) -> dict:
        return {
            "rows_read": self.rows_read,
            "counts": dict(self.counts),
            "examples": {k: v for k, v in self.examples.items()},
        }


@dataclass
class PreparedData:
    tokens: TokenArrays
    train: np.ndarray  # int64 [n, 3] (row, start, end) absolute offsets into tokens
    val: np.ndarray
    report: DataReport
    groups: np.ndarray | None = None  # int64 [n]: group id of each train piece (group_by only)
    group_names: list[str] = field(default_factory=list)  # the FIELD value of each group id
    val_groups: np.ndarray | None = None  # int64 [n_val]: data.eval_by id of each val piece
    val_group_names: list[str] = field(default_factory=list)


def _cache_dir() -> Path:
    import os

    from sft.models.smollm2 import cache_root

    return Path(os.environ.get("SFT_CACHE_TOKENIZED", cache_root() / "tokenized"))


def _tokenizer_fingerprint(tokenizer) -> str:
    h = hashlib.sha256()
    h.update(str(getattr(tokenizer, "name_or_path", "")).encode())
    h.update(str(len(tokenizer)).encode())
    h.update(str(tokenizer.chat_template or "").encode())
    h.update(
        json.dumps(
            tokenizer.convert_ids_to_tokens(list(range(min(len(tokenizer), 512)))),
            ensure_ascii=False,
        ).encode()
    )
    return h.hexdigest()[:16]


def _tokenize_rows(
    messages: list[list[dict]],
    tokenizer,
    train_on: str,
    num_proc: int,
    cache_key: str,
    progress: bool,
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Tokenize with datasets.map (cached under `cache_key`, parallel, with a progress bar)."""
    import datasets

    from sft.data.tokenize import tokenize_conversation

    def fn(ex):
        try:
            ids, mask = tokenize_conversation(tokenizer, ex["messages"], train_on)
            return {"input_ids": ids, "trained": mask, "error": ""}
        except RowError as e:
            return {
                "input_ids": np.zeros(0, np.int32),
                "trained": np.zeros(0, bool),
                "error": e.reason,
            }

    cache_dir = _cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not progress:
        datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict({"messages": messages})
    out = ds.map(
        fn,
        remove_columns=["messages"],
        num_proc=num_proc if len(messages) > 256 else None,
        cache_file_name=str(cache_dir / f"{cache_key}.arrow"),
        desc="tokenizing",
        features=datasets.Features(
            {
                "input_ids": datasets.Sequence(datasets.Value("int32")),
                "trained": datasets.Sequence(datasets.Value("bool")),
                "error": datasets.Value("string"),
            }
        ),
    )
    col_ids = out.data.column("input_ids").combine_chunks()
    col_mask = out.data.column("trained").combine_chunks()
    offs = col_ids.offsets.to_numpy()
    flat_ids = col_ids.values.to_numpy(zero_copy_only=False)
    flat_mask = col_mask.values.to_numpy(zero_copy_only=False)
    ids = [flat_ids[offs[i] : offs[i + 1]] for i in range(len(offs) - 1)]
    masks = [flat_mask[offs[i] : offs[i + 1]] for i in range(len(offs) - 1)]
    return ids, masks, out["error"]


def _apply_overlong(
    lengths: np.ndarray,
    targets: np.ndarray,
    offsets: np.ndarray,
    max_length: int,
    policy: str,
    rows: np.ndarray,
    where: list[str],
    report: DataReport,
    bad: list[BadRow],
) -> np.ndarray:
    """Pieces (row, start, end) for the given rows under the overlong policy; a row left without
    any supervised token is appended to `bad` (it counts against data.max_bad_fraction)."""
    pieces = []
    for r in rows:
        a, n = int(offsets[r]), int(lengths[r])
        if n > max_length:
            if policy == "drop":
                report.add("dropped_overlong", where[r])
                continue
            if policy == "truncate":
                report.add("truncated", where[r])  # kept, counted
                cand = [(a, a + max_length)]
            else:  # split
                report.add("split", where[r])
                cand = [(a + s, a + e) for _, s, e in split_overlong(np.array([n]), max_length)]
        else:
            cand = [(a, a + n)]
        kept = 0
        for s, e in cand:
            if has_target(targets, s, e):
                pieces.append((r, s, e))
                kept += 1
        if kept == 0:
            bad.append(
                BadRow(
                    where[r],
                    "no_supervised_tokens",
                    f"no trained token within data.max_length={max_length} (data.overlong={policy})",
                )
            )
        elif kept < len(cand):
            report.counts["split_fragments_without_target"] += len(cand) - kept
    return np.asarray(pieces, dtype=np.int64).reshape(-1, 3)


def _position(where: str) -> tuple[str, int]:
    """("file", line) from "file:line" or "source[index]", for ordering bad rows as they appear."""
    m = re.match(r"^(.*?)(?::(\d+)|\[(\d+)\])$", where)
    return (m.group(1), int(m.group(2) or m.group(3))) if m else (where, 0)


def _check_bad(
    bad: list[BadRow], rows_read: int, max_bad_fraction: float, sources: list[str]
) -> None:
    """Raise one line naming the first bad row (file:line) once the bad fraction exceeds the limit."""
    if not bad or len(bad) / max(rows_read, 1) <= max_bad_fraction:
        return

    def order(b: BadRow) -> tuple[int, int]:
        src, n = _position(b.where)
        return (sources.index(src) if src in sources else len(sources), n)

    first = min(bad, key=order)
    raise UserError(
        f"{first.where}: bad row ({first.reason}{': ' + first.detail if first.detail else ''}); "
        f"{len(bad)} bad row(s) of {rows_read} so far exceed data.max_bad_fraction={max_bad_fraction}: "
        "fix the data or raise data.max_bad_fraction to skip bad rows (sft-train counts them in "
        "run_dir/data_report.json)"
    )


def prepare_data(
    tokenizer, data: DataConfig, seed: int = 0, *, progress: bool = True, group_by: str = ""
) -> PreparedData:
    """Everything the planner needs, from the data config (see the module docstring);
    `group_by` names the rows' field whose values group the training pieces."""
    report = DataReport()
    raw = read_rows(
        data.path,
        data.split,
        data.builder,
        dict(data.builder_args),
        data.demo_size,
        demo_tasks=tuple(data.demo_tasks),
    )
    if data.limit:
        raw.rows = raw.rows[: data.limit]
    if data.sample:
        raw.rows = sample_rows(raw.rows, data.sample, data.sample_seed)
    n_train_rows = len(raw.rows)
    sources = [raw.source]
    if data.val_path:
        val_raw = read_rows(data.val_path, data.split)
        raw.rows = raw.rows + val_raw.rows
        raw.bad = raw.bad + val_raw.bad
        sources.append(val_raw.source)
    bad: list[BadRow] = list(raw.bad)
    values = tags = evals = None
    if data.eval_by:
        evals = field_values(raw.rows, data.eval_by, 0, f"data.eval_by={data.eval_by}")
    if group_by:
        values = field_values(raw.rows, group_by, n_train_rows, f"collator.group_by={group_by}")
    if data.combine == "same_tag":
        option = f"data.combine=same_tag data.combine_tag={data.combine_tag}"
        tags = field_values(raw.rows, data.combine_tag, n_train_rows, option)
    convs = []
    for i, row in enumerate(raw.rows):
        try:
            convs.append(
                Conversation(
                    to_messages(row, data.format, data.system_prompt),
                    row["_where"],
                    is_val=i >= n_train_rows,
                    group=values[i] if values is not None else None,
                    tag=tags[i] if tags is not None else None,
                    eval_group=evals[i] if evals is not None else None,
                )
            )
        except RowError as e:
            bad.append(BadRow(row["_where"], e.reason, e.detail))
    report.rows_read = len(raw.rows) + len(raw.bad)
    drawn = False  # held-out rows drawn before data.turns / data.combine reshape the rest
    if convs and (data.turns != "all" or data.combine != "none"):  # sft/data/turns.py
        if data.val_fraction > 0 and not data.val_path:
            drawn = True
            for i in held_out(len(convs), data, seed)[0]:
                convs[i].is_val = True
        convs = shape_turns(convs, data.turns, data.combine, data.combine_turns, seed, report)
    msgs, where = [c.messages for c in convs], [c.where for c in convs]
    is_val, row_values = [c.is_val for c in convs], [c.group for c in convs]
    eval_values = [c.eval_group for c in convs]
    max_bad = data.max_bad_fraction
    _check_bad(bad, report.rows_read, max_bad, sources)  # fail early: the count only grows
    if not msgs:
        first = f" (first problem: {bad[0].where}: {bad[0].reason})" if bad else ""
        raise UserError(f"no usable rows in {raw.source}{first}")

    key = hashlib.sha256(
        json.dumps(
            [TOKENIZE_VERSION, _tokenizer_fingerprint(tokenizer), data.train_on, msgs],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:24]
    ids_list, mask_list, errors = _tokenize_rows(
        msgs, tokenizer, data.train_on, data.num_proc, key, progress
    )
    keep = []
    for i, err in enumerate(errors):
        if err:
            bad.append(BadRow(where[i], err))
        else:
            keep.append(i)
    _check_bad(bad, report.rows_read, max_bad, sources)

    lengths = np.array([len(ids_list[i]) for i in keep], dtype=np.int64)
    offsets = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = (
        np.concatenate([ids_list[i] for i in keep]).astype(np.int32)
        if keep
        else np.zeros(0, np.int32)
    )
    mask = np.concatenate([mask_list[i] for i in keep]).astype(bool) if keep else np.zeros(0, bool)
    tokens = TokenArrays(
        ids=ids,
        mask=mask,
        targets=row_targets(ids, mask, offsets),
        offsets=offsets,
        row_ids=[where[i] for i in keep],
    )
    kept_where = tokens.row_ids
    kept_is_val = np.array([is_val[i] for i in keep], dtype=bool)

    rows = np.arange(len(keep))
    if data.val_path or drawn:
        train_rows, val_rows = rows[~kept_is_val], rows[kept_is_val]
    elif data.val_fraction > 0:
        val_rows, train_rows = held_out(len(rows), data, seed)
    else:
        train_rows, val_rows = rows, rows[:0]
    train = _apply_overlong(
        lengths, tokens.targets, offsets, data.max_length, data.overlong, train_rows, kept_where,
        report, bad,
    )  # fmt: skip
    val = _apply_overlong(
        lengths, tokens.targets, offsets, data.max_length, "truncate", val_rows, kept_where,
        DataReport(), bad,
    )  # fmt: skip
    _check_bad(bad, report.rows_read, max_bad, sources)
    for b in bad:
        report.add(b.reason, b.where)
    if bad:
        log.warning(
            "skipped %d bad row(s): %s (sft-train lists examples in run_dir/data_report.json)",
            len(bad),
            dict(Counter(b.reason for b in bad)),
        )
    if len(train) == 0:
        raise UserError(
            f"no training sample left in {raw.source} after filtering: {dict(report.counts)}"
        )
    report.counts["train_pieces"] = len(train)
    report.counts["val_pieces"] = len(val)
    prepared = PreparedData(tokens=tokens, train=train, val=val, report=report)
    if group_by:
        from sft.data.grouping import group_ids

        kept_values = [row_values[i] for i in keep]
        ids, prepared.group_names = group_ids([kept_values[int(r)] for r in train[:, 0]])
        prepared.groups = ids.astype(np.int64)
    if data.eval_by:  # the validation loss per value of FIELD (sft/evaluation.py)
        from sft.data.grouping import group_ids

        val_values = [eval_values[keep[int(r)]] for r in val[:, 0]]
        if None in val_values:
            where = kept_where[int(val[val_values.index(None), 0])]
            raise UserError(
                f"{where}: validation row has no field {data.eval_by!r} for data.eval_by"
            )
        ids, prepared.val_group_names = group_ids(val_values)
        prepared.val_groups = ids.astype(np.int64)
    return prepared
