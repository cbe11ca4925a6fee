"""`sft-ner`: score span files, run in-context GPT-NER, evaluate a fine-tuned run on NER, and
tabulate runs.

    sft-ner score --gold G.jsonl --pred P.jsonl
    sft-ner prompt --data conll2003 --split test --n 100 --k 8 --retrieval sentence --verify \\
        --model PATH_OR_smollm2 | --base-url URL --out DIR   [--config configs/ner/....yaml]
        [--pool-size N --pool-seed S]
    sft-ner evaluate --run-dir RUN_DIR [--split dev|test] [--n 100 --seed 0 | --limit N]
    sft-ner table RUN_DIR... --out DIR

`prompt --n K --seed S` and `evaluate --n K --seed S` label the same seeded test sample, and
`prompt --pool-size N --pool-seed S` draws demos from the same N training sentences that
`sft-train data=ner_conll2003 data.builder_args.pool_size=N data.builder_args.pool_seed=S`
trains on (`sft.ner.pool`); both record the subsets' digests in their metrics, and `table`
(`sft.ner.table`) says when runs it puts side by side do not share them.

Invariant: a user mistake (bad flag, missing file, mismatched files) prints one `error: ...`
line on stderr and exits with code 2; results go to stdout as JSON (`score`), to files
(`prompt`, `evaluate`), or both (`table`: markdown on stdout, the files under --out); progress
goes to stderr. `prompt` and `evaluate` append each finished
sentence to the predictions file as it completes and every generation to the generation cache,
so rerunning the same command resumes with nothing asked twice (`sft.ner.store`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

from sft.errors import UserError, exit_on_user_error
from sft.ner.datasets import SPLITS, data_root, dataset_file, infer_dataset
from sft.ner.entity_types import load_types
from sft.ner.pool import digest, pool_indices, sample_indices
from sft.ner.readers import Sentence, read_sentences, read_spans_jsonl
from sft.ner.score import score_spans


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise UserError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sft-ner", description="GPT-NER: NER as generation with @@entity## markers"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("score", help="micro P/R/F1 of a prediction span jsonl against gold")
    s.add_argument("--gold", required=True)
    s.add_argument("--pred", required=True)

    p = sub.add_parser("prompt", help="in-context GPT-NER with retrieved demonstrations")
    p.add_argument("--config", help="YAML file of defaults for these options (flags win)")
    p.add_argument("--data", help="dataset name (conll2003, wnut17, genia) or a data file")
    p.add_argument("--split", default="test")
    p.add_argument("--pool-split", help="demo pool split (default: train, or dev where no train)")
    p.add_argument(
        "--pool",
        help="demo pool file (default: the dataset's pool split; with a "
        "--data file, that same file minus the query)",
    )
    p.add_argument(
        "--pool-size",
        type=int,
        help="demos from a seeded subset of this many pool sentences (the low-resource setting; "
        "sft-train data.builder_args.pool_size=N trains on the same ones)",
    )
    p.add_argument("--pool-seed", type=int, default=0, help="seed of the --pool-size subset")
    p.add_argument("--n", type=int, default=100, help="sentences to label (0 = all)")
    p.add_argument("--sample", choices=["random", "first"], default="random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=8, help="demonstrations per prompt")
    p.add_argument("--retrieval", choices=["random", "sentence", "entity"], default="random")
    p.add_argument("--embedder", help="sentence-embedding model dir (default all-MiniLM-L6-v2)")
    p.add_argument(
        "--embedder-pooling",
        choices=["mean", "cls"],
        default="mean",
        help="pooling of --embedder: mean of its tokens, or its first ([CLS]) token, SimCSE-style",
    )
    p.add_argument("--entity-encoder", help="HF model dir for entity-level kNN (default --model)")
    p.add_argument("--verify", action="store_true", help="self-verify every extracted entity")
    p.add_argument("--verify-k", type=int, default=0, help="demos in verification prompts")
    p.add_argument(
        "--verify-demos",
        choices=["extraction", "entity"],
        default="extraction",
        help="where verification demos come from: the sentence's extraction demos, or per "
        "entity by kNN over the pool's words (GPT-NER; word features of --verify-encoder)",
    )
    p.add_argument(
        "--verify-encoder",
        help="HF model dir whose word features drive --verify-demos entity, e.g. the final/ of "
        "an sft-train data=ner_conll2003 run (default --entity-encoder, else --model)",
    )
    p.add_argument("--mode", choices=["per_type", "all_types"], default="per_type")
    p.add_argument("--types-file")
    p.add_argument("--model", help="local HF model dir, or 'smollm2'")
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000")
    p.add_argument(
        "--model-name", help="model id sent to --base-url (default: the first of GET /v1/models)"
    )
    p.add_argument(
        "--api",
        choices=["chat", "completions"],
        default="chat",
        help="chat: the prompt as one user turn through the chat template; completions: the "
        "prompt as plain text (a server's /v1/completions, or --model without its template)",
    )
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var holding the API key")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per server request")
    p.add_argument("--retries", type=int, default=3, help="retries of a failed server request")
    p.add_argument("--concurrency", type=int, default=4, help="server requests in flight")
    p.add_argument(
        "--server-stop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="let the server apply the stop string (a reply that may have stopped on a stop "
        "begun in the prompt is asked again without it); --no-server-stop cuts on the client only",
    )
    p.add_argument("--batch-size", type=int, default=8, help="local model batch size")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--cache-dir", help="retrieval index cache (default $SFT_CACHE/ner-index)")
    p.add_argument("--out")
    p.add_argument(
        "--gen-cache", help="generation cache file (default OUT/generations.jsonl), shareable"
    )
    p.add_argument(
        "--fresh", action="store_true", help="relabel every sentence instead of resuming OUT"
    )

    e = sub.add_parser("evaluate", help="score a fine-tuned run (RUN_DIR/final) on its NER dataset")
    e.add_argument("--run-dir", required=True)
    e.add_argument("--split", default="dev")
    e.add_argument("--limit", type=int, help="first N sentences only (as --n N --sample first)")
    e.add_argument("--n", type=int, default=0, help="sentences to label (0 = all)")
    e.add_argument("--sample", choices=["random", "first"], default="random")
    e.add_argument(
        "--seed", type=int, default=0, help="seed of the --n sample (as sft-ner prompt's --seed)"
    )
    e.add_argument("--data", help="dataset name, overriding the run's config")
    e.add_argument("--file", help="data file to score on, overriding --data/--split")
    e.add_argument("--mode", choices=["per_type", "all_types"], help="overrides the run's config")
    e.add_argument("--verify", action="store_true")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--threads", type=int)

    t = sub.add_parser(
        "table", help="a paper-style P/R/F1 table and an F1-against-N plot of prompt/evaluate runs"
    )
    t.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="an `sft-ner prompt --out` dir (metrics.json) or an sft-train run dir scored by "
        "`sft-ner evaluate` (eval/ner_SPLIT.json)",
    )
    t.add_argument("--split", default="test", help="which eval/ner_SPLIT.json of a trained run")
    t.add_argument("--out", help="folder for table.md, table.csv, table.json and f1_vs_n.png")
    t.add_argument("--title", default="", help="a title line above the markdown table")
    parser.prompt_parser = p  # for --config defaults
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "prompt" and args.config:
        args = _with_config(parser, argv if argv is not None else sys.argv[1:], args.config)
    handler = {
        "score": cmd_score,
        "prompt": cmd_prompt,
        "evaluate": cmd_evaluate,
        "table": cmd_table,
    }[args.command]
    handler(args)
    return 0


def _with_config(parser: argparse.ArgumentParser, argv: list[str], path: str) -> argparse.Namespace:
    cfg_path = Path(path)
    if not cfg_path.is_file():
        raise UserError(f"--config {path}: no such file")
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    if not isinstance(cfg, dict):
        raise UserError(f"--config {path}: expected a mapping of option: value")
    prompt_parser = parser.prompt_parser
    known = {a.dest for a in prompt_parser._actions}
    values = {str(k).replace("-", "_"): v for k, v in cfg.items()}
    unknown = sorted(set(values) - known - {"config"})
    if unknown:
        raise UserError(f"--config {path}: unknown options {unknown}")
    prompt_parser.set_defaults(**values)
    return parser.parse_args(argv)


def cmd_score(args: argparse.Namespace) -> None:
    gold, pred = read_spans_jsonl(args.gold), read_spans_jsonl(args.pred)
    if len(gold) != len(pred):
        raise UserError(
            f"{args.gold} has {len(gold)} sentences but {args.pred} has {len(pred)}; "
            "predictions must be one line per gold line, in the same order"
        )
    for i, (g, p) in enumerate(zip(gold, pred)):
        if g.tokens != p.tokens:
            raise UserError(
                f"line {i + 1}: tokens differ between {args.gold} and {args.pred}; "
                "predictions must be in the gold order"
            )
    report = score_spans([g.entities for g in gold], [p.entities for p in pred])
    print(json.dumps(report, indent=2))


def _say(msg: str) -> None:
    print(f"[sft-ner] {msg}", file=sys.stderr, flush=True)


def _resolve_data(data: str, split: str) -> tuple[str, Path]:
    """(dataset name, file) for a dataset name or a path."""
    if data in SPLITS:
        return data, dataset_file(data, split)
    path = Path(data)
    if not path.is_file():
        raise UserError(f"--data {data}: neither a dataset ({sorted(SPLITS)}) nor an existing file")
    try:
        return infer_dataset(path), path
    except UserError:
        return "custom", path


def _pick(sentences: list[Sentence], n: int, sample: str, seed: int) -> list[int]:
    return sample_indices(len(sentences), n, sample, seed)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _cache_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    return Path(os.environ.get("SFT_CACHE", Path.home() / ".cache" / "sft")) / "ner-index"


def _model_path(model: str) -> str:
    if model == "smollm2":
        from sft.models.smollm2 import ensure_smollm2

        return str(ensure_smollm2())
    if not Path(model).is_dir():
        raise UserError(f"--model {model}: not a local model directory (or 'smollm2')")
    return model


def cmd_prompt(args: argparse.Namespace) -> None:
    from sft.ner.backends import HFBackend, OpenAIBackend
    from sft.ner.retrieval import (
        EntityKNN,
        HFSentenceEmbedder,
        HFWordEncoder,
        RandomRetriever,
        SentenceKNN,
        minilm_embedder,
    )

    if not args.data or not args.out:
        raise UserError("prompt needs --data and --out (on the command line or in --config)")
    if bool(args.model) == bool(args.base_url):
        raise UserError("prompt needs exactly one of --model (local HF dir) or --base-url (server)")
    if args.k < 0 or args.verify_k < 0:
        raise UserError("--k and --verify-k must be >= 0")
    entity_verify = args.verify and args.verify_k > 0 and args.verify_demos == "entity"
    if args.pool_size is not None and not (args.k > 0 or entity_verify):
        raise UserError(
            f"--pool-size {args.pool_size} with --k 0 draws nothing from the pool: use --k > 0 "
            "(or --verify-demos entity with --verify-k > 0)"
        )
    if args.verify and args.verify_k > 0 and args.k == 0 and not entity_verify:
        raise UserError(
            "--verify-k > 0 with --k 0 has no demos to draw from: use --k > 0, or "
            "--verify-demos entity (per-entity demos from the pool)"
        )
    _set_threads(args.threads)
    dataset, eval_file = _resolve_data(args.data, args.split)
    types = load_types(dataset, args.types_file)
    all_eval = read_sentences(eval_file)
    picked = _pick(all_eval, args.n, args.sample, args.seed)
    sentences = [all_eval[i] for i in picked]

    pool: list[Sentence] = []
    retriever, same = None, False
    pool_record: dict | None = None
    if args.k > 0 or entity_verify:
        if args.pool:
            pool_file = Path(args.pool)
        elif args.data in SPLITS:
            pool_split = args.pool_split or ("train" if "train" in SPLITS[dataset] else "dev")
            pool_file = dataset_file(dataset, pool_split)
        else:
            pool_file = Path(eval_file)
        pool = read_sentences(pool_file)
        same = pool_file.resolve() == Path(eval_file).resolve()
        kept = pool_indices(len(pool), args.pool_size, args.pool_seed)
        if args.pool_size is not None:
            _say(f"--pool-size {args.pool_size} (seed {args.pool_seed}) of {len(pool)} sentences")
            pool = [pool[i] for i in kept]
        pool_record = {
            "file": str(pool_file),
            "size": args.pool_size,
            "seed": args.pool_seed,
            "sentences": len(pool),
            "digest": digest(pool),
        }
        _say(f"demo pool: {pool_file} ({len(pool)} sentences){' minus the query' if same else ''}")
        if args.k == 0:
            pass  # the pool only serves the per-entity verification demos
        elif args.retrieval == "random":
            retriever = RandomRetriever(pool, seed=args.seed, exclude_identical=same)
        elif args.retrieval == "sentence":
            embedder = (
                HFSentenceEmbedder(args.embedder, args.embedder_pooling)
                if args.embedder
                else minilm_embedder()
            )
            retriever = SentenceKNN(
                pool, embedder, _cache_dir(args.cache_dir), exclude_identical=same
            )
        else:
            source = args.entity_encoder or (_model_path(args.model) if args.model else None)
            if source is None:
                raise UserError("--retrieval entity needs --entity-encoder PATH (an HF model dir)")
            encoder = HFWordEncoder.from_pretrained(source)
            retriever = EntityKNN(
                pool, encoder, cache_dir=_cache_dir(args.cache_dir), exclude_identical=same
            )
    verify_source = _verify_source(args, pool, same) if entity_verify else None

    if args.model:
        backend = HFBackend.from_pretrained(
            _model_path(args.model),
            batch_size=args.batch_size,
            use_chat_template=None if args.api == "chat" else False,
        )
    else:
        backend = OpenAIBackend(
            args.base_url,
            args.model_name,
            api=args.api,
            api_key_env=args.api_key_env,
            timeout_s=args.timeout,
            max_retries=args.retries,
            concurrency=args.concurrency,
            server_stop=args.server_stop,
        )
        args.model_name = backend.model  # asks GET /v1/models when none was given
        _say(f"server {args.base_url}: model {args.model_name!r}, api {args.api}")
    _say(
        f"labeling {len(sentences)} {dataset} {args.split} sentences, {len(types)} types, "
        f"k={args.k} ({args.retrieval}), verify={args.verify}"
    )
    settings = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    _run_and_write(
        sentences,
        picked,
        types,
        backend,
        pool,
        retriever,
        Path(args.out),
        "",
        {
            "k": args.k,
            "mode": args.mode,
            "verify": args.verify,
            "verify_k": args.verify_k,
            "verify_source": verify_source,
        },
        {"dataset": dataset, "file": str(eval_file), **settings},
        gen_cache=args.gen_cache,
        fresh=args.fresh,
        extra={"approach": "in-context", "pool": pool_record},
    )


def _verify_source(args: argparse.Namespace, pool: list[Sentence], same: bool):
    """`--verify-demos entity`: the kNN datastore of the pool's words, by --verify-encoder."""
    from sft.ner.retrieval import HFWordEncoder
    from sft.ner.verify_demos import WordKNNVerifyDemos

    source = args.verify_encoder or args.entity_encoder
    source = source or (_model_path(args.model) if args.model else None)
    if source is None:
        raise UserError(
            "--verify-demos entity needs --verify-encoder PATH: an HF model dir, e.g. the final/ "
            "of an sft-train data=ner_conll2003 run"
        )
    if not Path(source).is_dir():
        raise UserError(f"--verify-encoder {source}: not a local model directory")
    _say(f"per-entity verification demos: kNN over {len(pool)} pool sentences' words ({source})")
    return WordKNNVerifyDemos(
        pool,
        HFWordEncoder.from_pretrained(source),
        cache_dir=_cache_dir(args.cache_dir),
        exclude_identical=same,
    )


# Settings that change how a run is carried out but not its records: a run resumes across them.
RUN_ONLY = {
    "out",
    "threads",
    "batch_size",
    "cache_dir",
    "base_url",
    "api_key_env",
    "timeout",
    "retries",
    "concurrency",
    "server_stop",
    "gen_cache",
    "fresh",
}


def _run_and_write(
    sentences,
    picked,
    types,
    backend,
    pool,
    retriever,
    out: Path,
    prefix: str,
    run_args: dict,
    settings: dict,
    gen_cache: str | None = None,
    fresh: bool = False,
    extra: dict | None = None,
) -> dict:
    """Label the sentences not yet in OUT's log (appending each as it finishes), then write the
    whole log in the run's order and the metrics over every sentence, resumed ones included.
    `extra` goes into the metrics as is, beside `test_sample` (the labeled sentences' digest)."""
    from sft.ner.pipeline import NERStats, SentenceOutcome, run_gpt_ner
    from sft.ner.store import (
        CachedBackend,
        GenerationCache,
        RunLog,
        backend_identity,
        sum_counts,
    )

    decisive = {k: v for k, v in settings.items() if k not in RUN_ONLY}
    log = RunLog(out, prefix, {**decisive, "backend": backend_identity(backend)}, fresh)
    if log.changed:
        _say(f"{log.run_file}: settings changed ({', '.join(log.changed)}); labeling afresh")
    labels = {t.label for t in types}
    gold = [[e for e in s.entities if e[2] in labels] for s in sentences]
    rows: list[dict | None] = [log.finished(i, s.tokens) for i, s in zip(picked, sentences)]
    todo = [j for j, row in enumerate(rows) if row is None]
    cache_path = Path(gen_cache) if gen_cache else out / f"{prefix}generations.jsonl"
    cached = CachedBackend(backend, GenerationCache(cache_path), log.prompts_path)
    resumed = len(rows) - len(todo)
    _say(
        f"resumed {resumed} of {len(rows)} sentences from {log.path}; "
        f"{len(cached.cache)} generations in the cache {cache_path}"
    )

    def finished(outcome: SentenceOutcome) -> None:
        j = todo[outcome.index]
        row = {
            "tokens": sentences[j].tokens,
            "entities": [list(e) for e in outcome.predicted],
            "index": picked[j],
            "gold": [list(e) for e in gold[j]],
            **outcome.raw,
            "stats": outcome.stats.as_dict(),
        }
        if outcome.unverified is not None:
            row["unverified"] = [list(e) for e in outcome.unverified]
        log.append(row)
        rows[j] = row

    t0 = time.perf_counter()
    try:
        run_gpt_ner(
            [sentences[j].tokens for j in todo],
            types,
            cached,
            pool=pool,
            retriever=retriever,
            progress=_say,
            on_sentence=finished,
            **run_args,
        )
    except UserError as e:
        saved = sum(row is not None for row in rows)
        raise UserError(
            f"{e} [{saved} of {len(rows)} sentences and {len(cached.cache)} generations are "
            "saved; rerun the same command to resume]"
        ) from None
    finally:
        cached.close()
        log.close()
    seconds = time.perf_counter() - t0
    log.rewrite(rows)
    metrics = score_spans(gold, [[tuple(e) for e in row["entities"]] for row in rows])
    if run_args.get("verify"):  # the same generations, scored before self-verification
        unverified = [[tuple(e) for e in row.get("unverified", [])] for row in rows]
        before = score_spans(gold, unverified)
        metrics["before_verify"] = {
            k: before[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn")
        }
    usage = dict(getattr(backend, "usage", {}))
    metrics.update(
        {
            "n_sentences": len(sentences),
            "seconds": round(seconds, 1),
            "stats": sum_counts([NERStats().as_dict(), *(row["stats"] for row in rows)]),
            "resumed": resumed,
            "generations": {
                "cached": cached.hits,
                "new": cached.misses,
                "cache": str(cache_path),
            },
            "usage": usage,
            "test_sample": {
                "file": settings.get("file"),
                "n": len(picked),
                "digest": digest(sentences),
            },
            **(extra or {}),
            "settings": settings,
        }
    )
    (out / f"{prefix}metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    tokens = ""
    if "prompt_tokens" in usage:
        tokens = f", {usage['prompt_tokens']} prompt + {usage['completion_tokens']} new tokens"
    _say(
        f"generations: {cached.hits} from the cache, {cached.misses} new{tokens}; "
        f"{resumed} of {len(rows)} sentences resumed"
    )
    _say(
        f"P={metrics['precision']:.4f} R={metrics['recall']:.4f} F1={metrics['f1']:.4f} "
        f"({seconds:.0f} s) -> {out}"
    )
    return metrics


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


if __name__ == "__main__":
    main()
