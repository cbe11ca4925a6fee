"""Read raw rows from a local file, a `datasets` folder, a hub dataset or the built-in demo.

Every row keeps where it came from (`file:line` or `file[index]`) so a bad row can be reported
precisely. Malformed JSON lines and non-UTF-8 bytes do not abort the read: they are returned as
`BadRow`s and the caller decides (policy `data.max_bad_fraction`). Nothing is dropped silently.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sft.errors import UserError


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be used, with its origin and the reason (a short snake_case key)."""

    where: str
    reason: str
    detail: str = ""


@dataclass
class RawRows:
    rows: list[dict[str, Any]]  # each has "_where"
    bad: list[BadRow]
    source: str


class DuplicateKeyError(ValueError):
    """A JSON object that names one key twice (json.loads would silently keep the last)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise DuplicateKeyError(k)
        seen[k] = v
    return seen


def _loads(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_no_duplicates)


def _read_jsonl(path: Path) -> RawRows:
    rows, bad = [], []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark (some editors write one)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad.append(BadRow(where, "non_utf8", str(e)))
                continue
            if not line.strip():
                continue
            try:
                obj = _loads(line)
            except json.JSONDecodeError as e:
                bad.append(BadRow(where, "malformed_json", e.msg))
                continue
            except DuplicateKeyError as e:
                bad.append(BadRow(where, "duplicate_key", f"key {e} appears twice"))
                continue
            if not isinstance(obj, dict):
                bad.append(BadRow(where, "not_an_object", type(obj).__name__))
                continue
            obj["_where"] = where
            rows.append(obj)
    return RawRows(rows, bad, str(path))


def _read_json(path: Path) -> RawRows:
    try:
        data = _loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e}); re-encode the file as UTF-8") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    except DuplicateKeyError as e:
        raise UserError(f"{path}: a JSON object names the key {e} twice; keep one") from None
    if isinstance(data, dict):  # {"data": [...]} or {"train": [...]}
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise UserError(f"{path}: expected a JSON list of rows (or an object holding one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
    rows, bad = [], []
    for i, obj in enumerate(data):
        where = f"{path}[{i}]"
        if not isinstance(obj, dict):
            bad.append(BadRow(where, "not_an_object", type(obj).__name__))
            continue
        rows.append({**obj, "_where": where})
    return RawRows(rows, bad, str(path))


def _read_parquet(path: Path) -> RawRows:
    import datasets
    import pyarrow as pa

    try:
        ds = datasets.Dataset.from_parquet(str(path))
    except (pa.ArrowException, OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable parquet file ({first})") from None
    return _from_datasets(ds, str(path))


def _from_datasets(ds: Any, source: str) -> RawRows:
    return RawRows([{**r, "_where": f"{source}[{i}]"} for i, r in enumerate(ds)], [], source)


def read_rows(
    path: str,
    split: str = "train",
    builder: str = "",
    builder_args: dict | None = None,
    demo_size: int = 3000,
    seed: int = 1234,
    demo_tasks: tuple[str, ...] = (),
) -> RawRows:
    """Read every row of a data source. `path=""` means the built-in demo dataset."""
    if builder:
        return _from_builder(builder, path, builder_args or {})
    if not path:
        from sft.data.demo import generate_demo

        return _from_datasets(generate_demo(demo_size, seed, demo_tasks), "demo")
    p = Path(path).expanduser()
    if p.is_file():
        suffix = "".join(p.suffixes[-1:]).lower()
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(p)
        if suffix == ".json":
            return _read_json(p)
        if suffix == ".parquet":
            return _read_parquet(p)
        raise UserError(
            f"data.path={path}: unsupported file type {suffix!r}; use .jsonl, .json or .parquet"
        )
    if p.is_dir():
        import datasets

        try:
            ds = datasets.load_from_disk(str(p))
        except Exception as e:  # noqa: BLE001 - reported as one line
            raise UserError(
                f"data.path={path} is a folder but not a datasets save_to_disk folder ({e})"
            ) from None
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise UserError(f"data.split={split!r} not in {path}; available: {list(ds)}")
            ds = ds[split]
        return _from_datasets(ds, str(p))
    if p.is_absolute() or path.startswith(".") or path.count("/") != 1:
        raise UserError(
            f"data.path={path} does not exist; point data.path at a .jsonl/.json/.parquet file"
        )
    return _from_hub(path, split)


def _from_hub(name: str, split: str) -> RawRows:
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # noqa: BLE001
        raise UserError(
            f"data.path={name}: not a local file, and loading it from the hub failed "
            f"({type(e).__name__}); check the name or use a local file"
        ) from None
    return _from_datasets(ds, f"hub:{name}")


def _from_builder(builder: str, path: str, args: dict) -> RawRows:
    mod_name, _, fn_name = builder.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise UserError(
            f"data.builder={builder!r} cannot be imported ({e}); use 'module:function'"
        ) from None
    rows = fn(path, **args)
    return _from_datasets(rows, f"{builder}({path})")
