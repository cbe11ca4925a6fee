"""Readers for the NER file formats this project meets, all producing `Sentence` objects.

Formats: tag columns (CoNLL-2003 4 columns with `-DOCSTART-`, or `token TAB tag` as WNUT-17;
the first column is the word, the last the tag), span jsonl (`{"tokens", "entities":
[[start, end_inclusive, type], ...]}`), W2NER json (`{"sentence", "ner": [{"index", "type"}]}`,
nested allowed) and MRC json (one record per sentence and type: `context`, `entity_label`,
`start_position`, `end_position`, word indices with inclusive ends, grouped back into sentences
by the sentence part of `qas_id`).

Invariant: every returned `Sentence` has non-empty tokens and entities that are sorted, unique,
in range `0 <= start <= end < len(tokens)`; malformed input raises `UserError` naming the file
and the line (or the record, for JSON arrays).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from sft.errors import UserError
from sft.ner.bio import Span, split_tag, tags_to_spans

FORMATS = ("auto", "columns", "spans", "w2ner", "mrc")


@dataclass
class Sentence:
    """One sentence: its words and its entity spans `(start, end_inclusive, type)`."""

    tokens: list[str]
    entities: list[Span] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tokens = [str(t) for t in self.tokens]
        ents = sorted({(int(s), int(e), str(t)) for s, e, t in self.entities})
        for s, e, t in ents:
            if not 0 <= s <= e < len(self.tokens):
                raise ValueError(f"entity {(s, e, t)} out of range for {len(self.tokens)} tokens")
        self.entities = ents

    def text(self) -> str:
        return " ".join(self.tokens)


def read_sentences(path: str | Path, fmt: str = "auto") -> list[Sentence]:
    """Read any supported format; `fmt="auto"` decides from the file's first characters."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file; check the data path (or set SFT_DATA_DIR)")
    if fmt not in FORMATS:
        raise UserError(f"unknown NER file format {fmt!r}; choose one of {list(FORMATS)}")
    if fmt == "auto":
        fmt = sniff_format(p)
    reader = {
        "columns": read_columns,
        "spans": read_spans_jsonl,
        "w2ner": read_w2ner,
        "mrc": read_mrc,
    }
    return reader[fmt](p)


def sniff_format(path: Path) -> str:
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if head.startswith("{"):
        return "spans"
    if head.startswith("["):
        key = re.search(r'"(sentence|context)"\s*:', head)
        return "mrc" if key and key.group(1) == "context" else "w2ner"
    return "columns"


def read_columns(path: str | Path) -> list[Sentence]:
    """Whitespace-separated columns, word first and tag last; blank lines end sentences."""
    p = Path(path)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        if tokens:
            sentences.append(Sentence(list(tokens), tags_to_spans(tags)))
        tokens.clear()
        tags.clear()

    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            cols = line.split()
            if not cols:
                flush()
                continue
            if cols[0] == "-DOCSTART-":
                flush()
                continue
            if len(cols) < 2:
                raise UserError(
                    f"{p}:{lineno}: expected 'word ... tag' columns, got {line.strip()!r}"
                )
            try:
                split_tag(cols[-1])
            except ValueError as e:
                raise UserError(f"{p}:{lineno}: {e}") from None
            tokens.append(cols[0])
            tags.append(cols[-1])
    flush()
    if not sentences:
        raise UserError(f"{p}: no sentences found; is this a token/tag column file?")
    return sentences


def read_spans_jsonl(path: str | Path) -> list[Sentence]:
    """One JSON object per line: `{"tokens": [...], "entities": [[start, end, type], ...]}`."""
    p = Path(path)
    sentences: list[Sentence] = []
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{p}:{lineno}: invalid JSON ({e.msg})") from None
            sentences.append(_sentence_from_spans_row(row, f"{p}:{lineno}"))
    if not sentences:
        raise UserError(f"{p}: empty span jsonl file")
    return sentences


def _sentence_from_spans_row(row: object, where: str) -> Sentence:
    if not isinstance(row, dict) or not isinstance(row.get("tokens"), list):
        raise UserError(f"{where}: expected an object with a 'tokens' list")
    tokens = row["tokens"]
    if not tokens:
        raise UserError(f"{where}: empty 'tokens' list")
    ents = row.get("entities", [])
    if not isinstance(ents, list):
        raise UserError(f"{where}: 'entities' must be a list of [start, end_inclusive, type]")
    parsed: list[Span] = []
    for ent in ents:
        if (
            not isinstance(ent, (list, tuple))
            or len(ent) != 3
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in ent[:2])
            or not isinstance(ent[2], str)
        ):
            raise UserError(f"{where}: bad entity {ent!r}; expected [start, end_inclusive, type]")
        parsed.append((ent[0], ent[1], ent[2]))
    return _checked(tokens, parsed, where)


def _checked(tokens: list, entities: list[Span], where: str) -> Sentence:
    try:
        return Sentence(list(tokens), entities)
    except ValueError as e:
        raise UserError(f"{where}: {e}") from None


def _load_json_array(p: Path) -> list:
    try:
        with open(p, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise UserError(f"{p}:1: expected a JSON array of records")
    return data


def read_w2ner(path: str | Path) -> list[Sentence]:
    """W2NER json: `[{"sentence": [...], "ner": [{"index": [i, i+1, ...], "type": T}]}]`."""
    p = Path(path)
    sentences: list[Sentence] = []
    for n, rec in enumerate(_load_json_array(p)):
        where = f"{p}: record {n}"
        if (
            not isinstance(rec, dict)
            or not isinstance(rec.get("sentence"), list)
            or not rec["sentence"]
        ):
            raise UserError(f"{where}: expected an object with a non-empty 'sentence' list")
        ents: list[Span] = []
        for ent in rec.get("ner", []):
            idx = ent.get("index") if isinstance(ent, dict) else None
            if not isinstance(idx, list) or not idx or not isinstance(ent.get("type"), str):
                raise UserError(
                    f"{where}: bad entity {ent!r}; expected {{'index': [...], 'type': T}}"
                )
            if idx != list(range(idx[0], idx[0] + len(idx))):
                raise UserError(
                    f"{where}: entity index {idx} is not contiguous; discontinuous "
                    "entities are not supported"
                )
            ents.append((idx[0], idx[-1], ent["type"]))
        sentences.append(_checked(rec["sentence"], ents, where))
    if not sentences:
        raise UserError(f"{p}: no records")
    return sentences


def read_mrc(path: str | Path) -> list[Sentence]:
    """MRC json: records per (sentence, type), grouped back into sentences in file order."""
    p = Path(path)
    groups: dict[str, tuple[str, list[Span]]] = {}
    for n, rec in enumerate(_load_json_array(p)):
        where = f"{p}: record {n}"
        if not isinstance(rec, dict) or not isinstance(rec.get("context"), str):
            raise UserError(f"{where}: expected an object with a 'context' string")
        starts, ends = rec.get("start_position", []), rec.get("end_position", [])
        label = rec.get("entity_label")
        if not isinstance(starts, list) or not isinstance(ends, list) or len(starts) != len(ends):
            raise UserError(
                f"{where}: start_position and end_position must be lists of equal length"
            )
        if not isinstance(label, str):
            raise UserError(f"{where}: missing 'entity_label'")
        qas_id = str(rec.get("qas_id", n))
        key = qas_id.split(".")[0] if "." in qas_id else f"#{rec['context']}"
        context = rec["context"]
        if key in groups and groups[key][0] != context:
            raise UserError(f"{where}: qas_id {qas_id} has a different context than its sentence")
        ents = groups.setdefault(key, (context, []))[1]
        for s, e in zip(starts, ends):
            if not isinstance(s, int) or not isinstance(e, int):
                raise UserError(f"{where}: positions must be word indices (ints)")
            ents.append((s, e, label))
    sentences = []
    for key, (context, ents) in groups.items():
        tokens = context.split()
        if not tokens:
            raise UserError(f"{p}: sentence {key} has an empty context")
        sentences.append(_checked(tokens, ents, f"{p}: sentence {key}"))
    if not sentences:
        raise UserError(f"{p}: no records")
    return sentences


def write_spans_jsonl(
    path: str | Path, sentences: list[Sentence], extra: list[dict] | None = None
) -> None:
    """Write span jsonl (the format `read_spans_jsonl` reads); `extra[i]` adds fields to line i."""
    with open(path, "w", encoding="utf-8") as f:
        for i, s in enumerate(sentences):
            row = {"tokens": s.tokens, "entities": [list(e) for e in s.entities]}
            if extra is not None:
                row.update(extra[i])
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
