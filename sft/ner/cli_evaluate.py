"""`sft-ner evaluate` (a fine-tuned run scored on NER) and `sft-ner table` (runs side by side).

Invariant: `evaluate` labels the same seeded test sample as `prompt --n K --seed S` and records
the trained pool and the sample's digest; `table` only reads run folders.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from sft.errors import UserError
from sft.ner.cli_run import _run_and_write, _say, _set_threads
from sft.ner.datasets import data_root, dataset_file, infer_dataset
from sft.ner.entity_types import load_types
from sft.ner.pool import digest, pool_indices, sample_indices
from sft.ner.readers import read_sentences


def _read_run_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data = cfg.get("data", {}) if isinstance(cfg, dict) else {}
    return data if isinstance(data, dict) else {}


def _trained_pool(data_cfg: dict) -> dict | None:
    """The training sentences of an `sft.ner.sft_data` run (its builder args over its data file),
    as `prompt` records its demo pool; None when the file is not there to count."""
    builder_args = data_cfg.get("builder_args") or {}
    path = data_cfg.get("path")
    if not path or not Path(path).is_file():
        return None
    size, seed = builder_args.get("pool_size"), int(builder_args.get("pool_seed") or 0)
    sentences = read_sentences(path)
    kept = pool_indices(len(sentences), size, seed)
    if builder_args.get("limit"):
        kept = kept[: int(builder_args["limit"])]
    return {
        "file": str(path),
        "size": size,
        "seed": seed,
        "sentences": len(kept),
        "digest": digest([sentences[i] for i in kept]),
    }


def _train_summary(run_dir: Path) -> dict:
    """Model and batching of a trained run, from its config.yaml (for `sft-ner table`)."""
    path = run_dir / "config.yaml"
    cfg = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    cfg = cfg if isinstance(cfg, dict) else {}
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    collator = cfg.get("collator") if isinstance(cfg.get("collator"), dict) else {}
    train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
    return {
        "model": model.get("name_or_path") or model.get("name"),
        "collator": collator.get("name") or collator.get("_name"),
        "epochs": train.get("epochs"),
        "max_steps": train.get("max_steps"),
    }


def cmd_table(args: argparse.Namespace) -> None:
    from sft.ner.table import load_rows, write_outputs

    rows, notes = load_rows([Path(r) for r in args.runs], split=args.split)
    for note in notes:
        _say(note)
    markdown = write_outputs(rows, notes, Path(args.out) if args.out else None, args.title)
    print(markdown, end="")
    if args.out:
        _say(f"wrote table.md, table.csv, table.json and f1_vs_n.png to {args.out}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from sft.ner.backends import HFBackend

    run_dir = Path(args.run_dir)
    model_dir = run_dir / "final"
    if not (model_dir / "config.json").is_file():
        raise UserError(
            f"{model_dir} holds no HF model (config.json); train the run first or "
            "point --run-dir at a finished run"
        )
    data_cfg = _read_run_config(run_dir)
    builder_args = data_cfg.get("builder_args") or {}
    dataset = args.data or builder_args.get("dataset", "auto")
    if dataset == "auto":
        if not data_cfg.get("path"):
            raise UserError(f"{run_dir}/config.yaml names no NER dataset; pass --data NAME")
        dataset = infer_dataset(data_cfg["path"])
    mode = args.mode or builder_args.get("mode", "per_type")
    types = load_types(dataset, builder_args.get("types_file"))
    eval_file = Path(args.file) if args.file else dataset_file(dataset, args.split)
    split = args.split if not args.file else Path(args.file).stem
    all_eval = read_sentences(eval_file)
    if args.limit:
        picked = sample_indices(len(all_eval), args.limit, "first")
    else:
        picked = sample_indices(len(all_eval), args.n, args.sample, args.seed)
    sentences = [all_eval[i] for i in picked]
    trained_on = _trained_pool(data_cfg)
    _set_threads(args.threads)
    backend = HFBackend.from_pretrained(str(model_dir), batch_size=args.batch_size)
    _say(f"evaluating {model_dir} on {len(sentences)} {dataset} {split} sentences ({mode})")
    settings = {
        "dataset": dataset,
        "file": str(eval_file),
        "split": split,
        "mode": mode,
        "model": str(model_dir),
        "limit": args.limit,
        "n": args.n,
        "sample": args.sample,
        "seed": args.seed,
        "verify": args.verify,
        "data_root": str(data_root()),
    }
    _run_and_write(
        sentences,
        picked,
        types,
        backend,
        [],
        None,
        run_dir / "eval",
        f"ner_{split}_",
        {"k": 0, "mode": mode, "verify": args.verify},
        settings,
        extra={"approach": "fine-tuned", "pool": trained_on, "train": _train_summary(run_dir)},
    )
    summary = run_dir / "eval" / f"ner_{split}.json"
    os.replace(run_dir / "eval" / f"ner_{split}_metrics.json", summary)
    _say(f"wrote {summary}")
