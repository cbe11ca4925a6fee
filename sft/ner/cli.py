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
import sys
from pathlib import Path

import yaml

from sft.errors import UserError, exit_on_user_error
from sft.ner.cli_evaluate import cmd_evaluate, cmd_table
from sft.ner.cli_run import _run_and_write, cmd_prompt  # noqa: F401  (the tests drive it)
from sft.ner.readers import read_spans_jsonl
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
        help="an `sft-ner prompt --out` dir (metrics.json), an sft-train run dir scored by "
        "`sft-ner evaluate` (eval/ner_SPLIT.json), or an earlier table's table.json",
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


if __name__ == "__main__":
    sys.exit(main())
