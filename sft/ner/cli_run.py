"""`sft-ner prompt`: in-context GPT-NER over a sample of a dataset, resumable (sft/ner/cli.py
parses the command line).

Invariant: every finished sentence is appended to the predictions file as it completes and
every generation to the generation cache, so rerunning the same command resumes with nothing
asked twice (`sft.ner.store`); a user mistake is one UserError before any request is sent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from sft.errors import UserError
from sft.ner.datasets import SPLITS, dataset_file, infer_dataset
from sft.ner.entity_types import load_types
from sft.ner.pool import digest, pool_indices, sample_indices
from sft.ner.readers import Sentence, read_sentences
from sft.ner.score import score_spans


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
