"""NER data as SFT conversations in the GPT-NER `@@entity##` format.

Mode `per_type`: one conversation per (sentence, type); the user turn is the zero-shot GPT-NER
prompt for that type (`prompts.ner_prompt` without demos), the assistant turn the sentence with
that type's entities marked `@@entity##`. Mode `all_types`: one conversation per sentence; the
user turn lists every type (`prompts.all_types_prompt`), the assistant turn marks each entity as
`@@entity##LABEL`. The prompts are exactly those `sft.ner.pipeline.run_gpt_ner` sends with k=0,
so a model trained on these rows is evaluated on the same prompt (`sft-ner evaluate`).

`pool_size=N` (with `pool_seed`) keeps the seeded N-sentence subset of `sft.ner.pool`, the very
sentences `sft-ner prompt --pool-size N --pool-seed S` draws its demos from (the low-resource
comparison): `sft-train data=ner_conll2003 data.builder_args.pool_size=N`.

Invariant: each assistant turn parses back (`parse_marked` / `parse_typed`) to exactly the gold
spans of its sentence (and type); ids are unique: `<dataset>-<sentence index>[-<label>]`, the
index being the sentence's place in the file (also under `pool_size`).
"""

from __future__ import annotations

from sft.errors import UserError
from sft.ner.datasets import infer_dataset
from sft.ner.entity_types import DEFAULT_TYPES, load_types
from sft.ner.pool import pool_indices
from sft.ner.prompts import all_types_prompt, mark, mark_typed, ner_prompt
from sft.ner.readers import read_sentences

MODES = ("per_type", "all_types")


def build_conversations(
    path: str,
    dataset: str = "auto",
    mode: str = "per_type",
    types_file: str | None = None,
    limit: int | None = None,
    pool_size: int | None = None,
    pool_seed: int = 0,
) -> list[dict]:
    """Rows `{"id", "messages": [user prompt, assistant marked sentence]}` from an NER file.

    `dataset="auto"` reads the dataset name from the path (conll2003, wnut17 or genia); `limit`
    keeps the first `limit` sentences (so `per_type` gives `limit * n_types` rows); `pool_size`
    keeps the seeded subset `sft.ner.pool.pool_indices(len(file), pool_size, pool_seed)` instead.
    """
    if mode not in MODES:
        raise UserError(f"NER builder mode={mode!r}: choose one of {list(MODES)}")
    if limit is not None and limit < 1:
        raise UserError(f"NER builder limit={limit}: must be a positive number of sentences")
    if dataset == "auto":
        dataset = infer_dataset(path) if types_file is None or _known_in_path(path) else "custom"
    types = load_types(dataset, types_file)
    if limit is not None and pool_size is not None:
        raise UserError("NER builder: pass limit or pool_size, not both")
    sentences = read_sentences(path)
    keep = pool_indices(len(sentences), pool_size, pool_seed)
    if limit is not None:
        keep = keep[:limit]
    labels = {t.label for t in types}
    rows: list[dict] = []
    for i in keep:
        sent = sentences[i]
        unknown = {e[2] for e in sent.entities} - labels
        if unknown:
            raise UserError(
                f"{path}: sentence {i} has entity types {sorted(unknown)} that {dataset} "
                f"does not define ({sorted(labels)}); pass a types file"
            )
        if mode == "all_types":
            rows.append(
                _row(
                    f"{dataset}-{i}",
                    all_types_prompt(sent.tokens, types),
                    mark_typed(sent.tokens, sent.entities),
                )
            )
            continue
        for t in types:
            spans = [e for e in sent.entities if e[2] == t.label]
            rows.append(
                _row(
                    f"{dataset}-{i}-{t.label}", ner_prompt(sent.tokens, t), mark(sent.tokens, spans)
                )
            )
    return rows


def _known_in_path(path: str) -> bool:
    try:
        return infer_dataset(path) in DEFAULT_TYPES
    except UserError:
        return False


def _row(row_id: str, prompt: str, answer: str) -> dict:
    return {
        "id": row_id,
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
    }
