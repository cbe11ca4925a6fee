"""`sft-ner table`: GPT-NER runs and fine-tuned-model scorings as a paper-style table and an
F1-against-N plot (the low-resource comparison of the GPT-NER paper).

A run is either an `sft-ner prompt --out` folder (`metrics.json`: in-context GPT-NER, with or
without self-verification) or an sft-train run folder scored by `sft-ner evaluate`
(`eval/ner_<split>.json`: the fine-tuned model, zero-shot prompts). One row per run and
setting: dataset, approach, setting (model, demos, verification, or batching and
training length), N (the labelled
training sentences the approach saw: the demo pool, or the fine-tuning set; 0 for zero-shot
prompting without a pool), P, R, F1 in percent. A verified run also gives the row of its own
generations before verification (`before_verify`), unless a run without verification of the
same setting is among the inputs (that run's row is kept instead); several verified runs of one
extraction setting (zero-shot and few-shot verification of the same generations) give that row
once, or once per distinct score with a note.

An earlier `table.json` is an input too: its rows enter as recorded (their `run` names the
folder they came from), so a table grows across machines whose run folders are gone; a row that
a run given beside it also produces (same dataset, approach, setting and N) is replaced by the
run's, with a note when the scores differ.

`write_outputs` writes `table.md`, `table.csv`, `table.json` and `f1_vs_n.png` (matplotlib, Agg):
one line per dataset and setting across N.

Invariant: the numbers in every output are those of the runs' metrics files, rounded only in
the markdown (two decimals of a percent); a folder that is neither kind of run is a `UserError`
naming it; runs of one dataset scored on different test samples, and runs of one dataset and N
trained or prompted from different training sentences, are named in the notes (stderr and the
markdown), never silently put side by side.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sft.errors import UserError

APPROACHES = ("in-context", "fine-tuned")


@dataclass
class Row:
    dataset: str
    approach: str
    setting: str
    n: int | None
    precision: float
    recall: float
    f1: float
    n_test: int
    test_digest: str | None
    pool_digest: str | None
    run: str
    derived: bool = False  # the before-verification row of a verified run


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read the run's metrics ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of metrics")
    return data


def _short(model: object) -> str:
    text = str(model or "?").rstrip("/")
    name = Path(text).name
    return Path(text).parent.name if name == "final" else name


def _pool_n(metrics: dict) -> int | None:
    pool = metrics.get("pool")
    if isinstance(pool, dict) and pool.get("sentences") is not None:
        return int(pool["sentences"])
    settings = metrics.get("settings") or {}
    return settings.get("pool_size")


def _scores(m: dict) -> tuple[float, float, float]:
    try:
        return float(m["precision"]), float(m["recall"]), float(m["f1"])
    except (KeyError, TypeError, ValueError):
        raise UserError("metrics without precision, recall and f1") from None


def rows_of_run(run: Path, split: str = "test") -> list[Row]:
    """The table rows of one run folder (or of its metrics file given directly)."""
    if run.is_file():
        metrics_file = run
    elif (run / "metrics.json").is_file():
        metrics_file = run / "metrics.json"
    elif (run / "eval" / f"ner_{split}.json").is_file():
        metrics_file = run / "eval" / f"ner_{split}.json"
    else:
        raise UserError(
            f"{run}: neither an `sft-ner prompt --out` folder (metrics.json) nor a run scored by "
            f"`sft-ner evaluate --split {split}` (eval/ner_{split}.json)"
        )
    m = _read_json(metrics_file)
    settings = m.get("settings") or {}
    approach = m.get("approach") or ("fine-tuned" if metrics_file.parent.name == "eval" else None)
    approach = approach or "in-context"
    test = m.get("test_sample") or {}
    pool = m.get("pool") if isinstance(m.get("pool"), dict) else {}
    common = {
        "dataset": str(settings.get("dataset", "?")),
        "approach": approach,
        "n_test": int(m.get("n_sentences", test.get("n", 0)) or 0),
        "test_digest": test.get("digest"),
        "pool_digest": pool.get("digest"),
        "run": str(run),
    }
    try:
        p, r, f = _scores(m)
    except UserError:
        raise UserError(f"{metrics_file}: metrics without precision, recall and f1") from None
    if approach == "fine-tuned":
        train = m.get("train") or {}
        model = train.get("model") or settings.get("model")
        batching = train.get("collator") or "?"
        budget = ""
        if isinstance(train.get("max_steps"), int) and train["max_steps"] > 0:
            budget = f", {train['max_steps']} steps"
        elif train.get("epochs") is not None:
            epochs = float(train["epochs"])
            budget = f", {epochs:g} epoch{'' if epochs == 1 else 's'}"
        setting = f"{_short(model)} fine-tuned ({batching}{budget})"
        if settings.get("verify"):
            setting += ", verified"
        n = _pool_n(m)
        return [Row(setting=setting, n=n, precision=p, recall=r, f1=f, **common)]
    model = settings.get("model") or settings.get("model_name") or settings.get("base_url")
    k = int(settings.get("k", 0) or 0)
    demos = f"k={k} {settings.get('retrieval', '?')}" if k else "zero-shot"
    base = f"{_short(model)} GPT-NER {demos}"
    n = _pool_n(m) if (k or pool) else 0
    if not settings.get("verify"):
        return [Row(setting=base, n=n, precision=p, recall=r, f1=f, **common)]
    verified = base + ", verified"
    if settings.get("verify_k"):
        demos_from = settings.get("verify_demos") or "extraction"
        verified += f" (verify-k={settings['verify_k']}, {demos_from} demos)"
    rows = [Row(setting=verified, n=n, precision=p, recall=r, f1=f, **common)]
    before = m.get("before_verify")
    if isinstance(before, dict):
        bp, br, bf = _scores(before)
        rows.append(Row(setting=base, n=n, precision=bp, recall=br, f1=bf, derived=True, **common))
    return rows


def rows_of_table(path: Path) -> list[Row]:
    """The rows of an earlier `sft-ner table --out` table.json, as they were written."""
    data = _read_json(path)
    names = set(Row.__dataclass_fields__)
    rows = data.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{path}: a table.json holds a list of rows under 'rows'")
    try:
        return [Row(**{k: v for k, v in r.items() if k in names}) for r in rows]
    except TypeError as e:
        raise UserError(f"{path}: a row lacks a field of the table ({e})") from None


def _is_table(path: Path) -> bool:
    return path.is_file() and path.name == "table.json"


def _key(row: Row) -> tuple:
    return (row.dataset, row.approach, row.setting, row.n)


def _scores_of(row: Row) -> tuple:
    return (row.precision, row.recall, row.f1, row.test_digest, row.pool_digest)


def _order(row: Row) -> tuple:
    return (
        row.dataset,
        APPROACHES.index(row.approach) if row.approach in APPROACHES else len(APPROACHES),
        row.setting,
        -1 if row.n is None else row.n,
    )


def _merge_tables(rows: list[Row], tables: list[Path], notes: list[str]) -> list[Row]:
    """`rows` (of runs) and the rows of earlier tables that no run gives; a table's measured
    row replaces runs' before-verification rows of its key, as a run without verification does."""
    for table in tables:
        for r in rows_of_table(table):
            same = [x for x in rows if _key(x) == _key(r)]
            if not same:
                rows.append(r)
            elif not r.derived and all(x.derived for x in same):
                rows = [x for x in rows if _key(x) != _key(r)] + [r]
            elif all(_scores_of(x) != _scores_of(r) for x in same):
                notes.append(
                    f"{r.dataset}, {r.setting}, N={r.n}: {table} has F1 {_pct(r.f1)} from "
                    f"{r.run}, replaced by {same[0].run} (F1 {_pct(same[0].f1)})"
                )
    return rows


def load_rows(runs: list[Path], split: str = "test") -> tuple[list[Row], list[str]]:
    """Every run's rows (sorted by dataset, approach, setting, N) and the notes about them;
    with earlier tables (table.json) among `runs`, their rows that no run gives."""
    rows = [row for run in runs if not _is_table(run) for row in rows_of_run(run, split)]
    measured = {_key(r) for r in rows if not r.derived}
    rows = [r for r in rows if not (r.derived and _key(r) in measured)]
    derived: dict[tuple, list[Row]] = {}  # several verified runs of one extraction setting
    for r in rows:
        if r.derived:
            same = derived.setdefault(_key(r), [])
            if all(_scores_of(r) != _scores_of(x) for x in same):
                same.append(r)
    rows = [r for r in rows if not r.derived] + [r for same in derived.values() for r in same]
    notes: list[str] = [
        f"{key[0]}, {key[2]}, N={key[3]}: {len(same)} verified runs give different scores "
        "before verification (not the same extractions); each is a row"
        for key, same in derived.items()
        if len(same) > 1
    ]
    rows = _merge_tables(rows, [run for run in runs if _is_table(run)], notes)
    rows.sort(key=_order)
    for dataset in sorted({r.dataset for r in rows}):
        of = [r for r in rows if r.dataset == dataset]
        samples = sorted({str(r.test_digest) for r in of})
        if len(samples) > 1:
            notes.append(
                f"{dataset}: the runs were scored on {len(samples)} different test samples "
                f"({', '.join(samples)}); their rows are not directly comparable"
            )
        for n in sorted({r.n for r in of if r.n}):
            pools = sorted({str(r.pool_digest) for r in of if r.n == n})
            if len(pools) > 1:
                notes.append(
                    f"{dataset}, N={n}: the runs saw {len(pools)} different sets of training "
                    f"sentences ({', '.join(pools)}); use the same --pool-seed and "
                    "data.builder_args.pool_seed"
                )
    return rows, notes


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def markdown(rows: list[Row], notes: list[str], title: str = "") -> str:
    lines = [f"**{title}**", ""] if title else []
    lines += [
        "| Dataset | Approach | Setting | N | P | R | F1 |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        n = "all" if r.n is None else str(r.n)
        lines.append(
            f"| {r.dataset} | {r.approach} | {r.setting} | {n} | {_pct(r.precision)} | "
            f"{_pct(r.recall)} | {_pct(r.f1)} |"
        )
    tests = sorted({(r.dataset, r.n_test, str(r.test_digest)) for r in rows})
    lines.append("")
    for dataset, n_test, dig in tests:
        lines.append(f"{dataset}: scored on {n_test} test sentences (sample {dig}).")
    for note in notes:
        lines.append(f"Note: {note}.")
    return "\n".join(lines) + "\n"


def write_csv(rows: list[Row], path: Path) -> None:
    names = list(Row.__dataclass_fields__)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=names)
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))


def plot(rows: list[Row], path: Path) -> None:
    """F1 (%) against N, one line per dataset and setting (log-2 N axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    lines: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        if r.n is not None:
            lines.setdefault((r.dataset, r.approach, r.setting), []).append(r)
    datasets = sorted({k[0] for k in lines})
    for (dataset, approach, setting), of in sorted(lines.items()):
        of = sorted(of, key=lambda r: r.n)
        label = setting if len(datasets) == 1 else f"{dataset}: {setting}"
        ax.plot(
            [r.n for r in of],
            [100 * r.f1 for r in of],
            marker="o" if approach == "in-context" else "s",
            linestyle="-" if approach == "in-context" else "--",
            label=label,
        )
    ns = sorted({r.n for of in lines.values() for r in of})
    if ns and min(ns) > 0:
        ax.set_xscale("log", base=2)
    elif ns:
        ax.set_xscale("symlog", base=2, linthresh=1)
    if ns:
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
    ax.set_xlabel("N (labelled training sentences)")
    ax.set_ylabel("F1 (%)")
    ax.set_title("GPT-NER in-context vs fine-tuned, by training-set size")
    ax.grid(True, alpha=0.3)
    if lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(rows: list[Row], notes: list[str], out: Path | None, title: str = "") -> str:
    """The markdown table; with `out`, also table.md, table.csv, table.json and f1_vs_n.png."""
    text = markdown(rows, notes, title)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(text, encoding="utf-8")
        write_csv(rows, out / "table.csv")
        payload = {"rows": [asdict(r) for r in rows], "notes": notes}
        (out / "table.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        plot(rows, out / "f1_vs_n.png")
    return text
