"""Entity types per dataset: the label in the data, a natural name and what the type covers.

Prompts name a type by `name` and explain it with `description`; predictions carry `label`.
A YAML or JSON file can override descriptions and names: a mapping `LABEL: "description"` or
`LABEL: {name: ..., description: ...}`. For a known dataset the file may only touch its labels
(a typo fails loudly); for any other dataset the file defines the whole type set.

Invariant: `load_types` returns a non-empty list with unique labels, in the dataset's fixed order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from sft.errors import UserError


@dataclass(frozen=True)
class EntityType:
    label: str  # as written in the data, e.g. "PER"
    name: str  # how prompts call it, e.g. "person"
    description: str  # one sentence saying what the type covers

    @property
    def article(self) -> str:
        """'a' or 'an' before `name`."""
        return "an" if self.name[:1].lower() in "aeiou" else "a"


DEFAULT_TYPES: dict[str, tuple[EntityType, ...]] = {
    "conll2003": (
        EntityType(
            "PER",
            "person",
            "Person entities are names of people, real or fictional, "
            "including first names, surnames and full names.",
        ),
        EntityType(
            "ORG",
            "organization",
            "Organization entities are names of companies, "
            "institutions, government bodies, political parties, sports teams and clubs.",
        ),
        EntityType(
            "LOC",
            "location",
            "Location entities are names of places: countries, "
            "cities, regions, continents, rivers, seas, mountains and other geographic or "
            "political areas.",
        ),
        EntityType(
            "MISC",
            "miscellaneous",
            "Miscellaneous entities are other named things: "
            "nationalities and adjectives derived from place names, languages, religions, "
            "events, competitions, titles of works and named products.",
        ),
    ),
    "wnut17": (
        EntityType(
            "person",
            "person",
            "Person entities are names of people, including "
            "usernames of real people and fictional characters.",
        ),
        EntityType(
            "location",
            "location",
            "Location entities are names of places such as "
            "cities, countries, buildings, venues and landmarks.",
        ),
        EntityType(
            "corporation",
            "corporation",
            "Corporation entities are names of companies and businesses that make or sell things.",
        ),
        EntityType(
            "group",
            "group",
            "Group entities are names of groups of people that are not "
            "companies: bands, sports teams, political parties, agencies and communities.",
        ),
        EntityType(
            "creative-work",
            "creative work",
            "Creative work entities are titles of "
            "songs, albums, films, books, TV shows, video games and other works of art.",
        ),
        EntityType(
            "product",
            "product",
            "Product entities are names of products: devices, "
            "software, apps, vehicles, foods and branded goods.",
        ),
    ),
    "genia": (
        EntityType(
            "DNA",
            "DNA",
            "DNA entities are genes, gene regions, promoters, enhancers, "
            "binding sites and other named stretches of DNA.",
        ),
        EntityType(
            "RNA",
            "RNA",
            "RNA entities are messenger RNAs and other named RNA molecules or transcripts.",
        ),
        EntityType(
            "cell_line",
            "cell line",
            "Cell line entities are named cultured cell lines, such as Jurkat or HeLa cells.",
        ),
        EntityType(
            "cell_type",
            "cell type",
            "Cell type entities are kinds of cells found in "
            "organisms, such as T cells, monocytes or B lymphocytes.",
        ),
        EntityType(
            "protein",
            "protein",
            "Protein entities are proteins, protein families, "
            "complexes, subunits and domains, such as enzymes, receptors, transcription "
            "factors and antibodies.",
        ),
    ),
}


def load_types(dataset: str | None, types_file: str | Path | None = None) -> list[EntityType]:
    """Types of `dataset`, with the overrides of `types_file` applied."""
    base = list(DEFAULT_TYPES.get(dataset or "", ()))
    if types_file is None:
        if not base:
            raise UserError(
                f"no entity types known for dataset {dataset!r}; choose one of "
                f"{sorted(DEFAULT_TYPES)} or pass a types file"
            )
        return base
    overrides = _read_mapping(Path(types_file))
    if not base:
        return [
            _override(EntityType(label, label, ""), value, types_file)
            for label, value in overrides.items()
        ]
    by_label = {t.label: t for t in base}
    unknown = sorted(set(overrides) - set(by_label))
    if unknown:
        raise UserError(
            f"{types_file}: labels {unknown} are not types of {dataset} ({sorted(by_label)})"
        )
    return [
        _override(t, overrides[t.label], types_file) if t.label in overrides else t for t in base
    ]


def _read_mapping(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"types file {path} not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{path}: cannot parse ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data:
        raise UserError(
            f"{path}: expected a non-empty mapping LABEL -> description or {{name, description}}"
        )
    return {str(k): v for k, v in data.items()}


def _override(t: EntityType, value: object, path: str | Path) -> EntityType:
    if isinstance(value, str):
        return replace(t, description=value)
    if isinstance(value, dict) and set(value) <= {"name", "description"}:
        return replace(t, **{k: str(v) for k, v in value.items()})
    raise UserError(
        f"{path}: entry for {t.label!r} must be a description string or a mapping "
        "with keys name/description"
    )
