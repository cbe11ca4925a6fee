"""bench_peer_trl.py's reading of the runs: throughput over the measured steps, whether both
sides trained the same micro-batches with comparable losses, MFU, ratios and the markdown tables.
"""

from __future__ import annotations

import statistics

from benchmarks.mfu import mfu
from benchmarks.peer_trl_common import PAIRS


def measure(steps: list[dict], warmup: int, threads: int) -> dict:
    kept = [s for s in steps if s["step"] > warmup]
    wall = sum(s["wall_s"] for s in kept)
    cpu = sum(s["cpu_s"] for s in kept)
    real = sum(s["real_tokens"] for s in kept)
    computed = sum(s["computed_tokens"] for s in kept)
    return {
        "measured_steps": [s["step"] for s in kept],
        "real_tokens": real,
        "computed_tokens": computed,
        "supervised_tokens": sum(s["supervised_tokens"] for s in kept),
        "wall_s": wall,
        "cpu_s": cpu,
        "step_s": wall / len(kept),
        "real_tokens_per_s": real / wall,
        "computed_tokens_per_s": computed / wall,
        "real_tokens_per_s_cpu_normalised": real / cpu * threads,
        "cpu_utilisation": cpu / wall / threads,
    }


def _pieces(steps: list[dict], where: dict[str, int]) -> list[list[list[int]]]:
    """step -> rows -> our piece index of every sample (-1: a sample we never made)."""
    out = []
    for s in steps:
        it = iter(s["samples"])
        out.append([[where.get(next(it), -1) for _ in row] for row in s["rows"]])
    return out


def compare(ours: dict, trl: dict, job: dict) -> dict:
    """Do the two runs train the same micro-batches? And are their losses comparable?"""
    where = {d: i for i, d in enumerate(job["digests"])}
    po, pt = _pieces(ours["steps"], where), _pieces(trl["steps"], where)
    so, st = ours["steps"], trl["steps"]

    def per_step(key):
        return [a[key] == b[key] for a, b in zip(so, st)]

    same_samples = [
        sorted(p for r in a for p in r) == sorted(p for r in b for p in r) for a, b in zip(po, pt)
    ]
    same_rows = [
        sorted(sorted(r) for r in a) == sorted(sorted(r) for r in b) for a, b in zip(po, pt)
    ]
    denominators = [b["loss_denominator"] == a["supervised_tokens"] for a, b in zip(so, st)]
    l1o, l1t = so[0]["loss"], st[0]["loss"]
    normalization = ours.get("loss_normalization", job["loss_normalization"])
    comparable = normalization == "token" and all(denominators)
    return {
        "same_samples_per_step": same_samples,
        "same_rows_per_step": same_rows,
        "same_real_tokens_per_step": per_step("real_tokens"),
        "same_supervised_tokens_per_step": per_step("supervised_tokens"),
        "trl_denominator_is_our_supervised_tokens": denominators,
        "losses_comparable": comparable,
        "loss_note": (
            "both token means over the micro-batch's supervised tokens (ours loss.normalization="
            "token, TRL nll / num_items_in_batch, equal denominators every step)"
            if comparable
            else f"NOT comparable: ours loss.normalization={normalization}, TRL's denominators "
            f"equal our supervised tokens in steps {[i + 1 for i, d in enumerate(denominators) if d]}"
        ),
        "step1_loss_ours": l1o,
        "step1_loss_trl": l1t,
        "step1_loss_abs_diff": abs(l1o - l1t),
        "ours_pieces": po,
        "trl_pieces": pt,
    }


def _describe(step: dict, pieces: list[list[int]]) -> str:
    rows = " ".join("[" + "+".join(str(n) for n in row) + "]" for row in step["rows"])
    ids = " ".join("(" + ",".join(str(p) for p in row) + ")" for row in pieces)
    return (
        f"{len(step['rows'])} row(s) {rows}: {step['real_tokens']} real / "
        f"{step['computed_tokens']} computed; samples {ids}"
    )


def _shape(record: dict):
    from sft.cli_config import compose_job
    from sft.plan_memory import resolve_shape

    cfg, _ = compose_job([f"model={record['settings']['model']}", "run_dir=/tmp/sft-unused"])
    m = cfg.model
    return resolve_shape(m.name_or_path, m.tiny_hidden_size, m.tiny_layers, m.tiny_vocab_size)


def add_mfu(record: dict, peak_flops: float) -> None:
    """Every run's model FLOPs utilisation over its measured steps (benchmarks/mfu.py)."""
    shape, warmup = _shape(record), record["settings"]["warmup"]
    record["gemm_peak_flops"] = peak_flops
    for run in record["runs"]:
        kept = [s for s in run["steps"] if s["step"] > warmup]
        run["measured"]["mfu"] = mfu(shape, kept, run["measured"]["wall_s"], peak_flops)


def markdown(record: dict) -> str:
    runs, lines = record["runs"], []
    lines += [
        (
            "| setup | attention | real tokens/s, median (min-max) | cpu-normalised | MFU "
            "| step-1 loss | peak RSS MB | load before -> after |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for setup in record["setups"]:
        rs = [r for r in runs if r["setup"] == setup]
        tps = [r["measured"]["real_tokens_per_s"] for r in rs]
        cpu = [r["measured"]["real_tokens_per_s_cpu_normalised"] for r in rs]
        loads = ", ".join(
            f"{r['load_before']['load_when_started']:.2f}->{r['load_after']:.2f}" for r in rs
        )
        mfus = [r["measured"].get("mfu") for r in rs]
        mfu_cell = f"{statistics.median(mfus):.1%}" if None not in mfus else ""
        lines.append(
            f"| {setup} | {rs[0]['attention']} | {statistics.median(tps):.1f} ({min(tps):.1f}-"
            f"{max(tps):.1f}) | {statistics.median(cpu):.1f} | {mfu_cell} | "
            f"{rs[0]['step1_loss']:.6f} | "
            f"{statistics.median(r['peak_rss_mb'] for r in rs):.0f} | {loads} |"
        )
    ratios = record["ratios"]
    if ratios:
        names = list(ratios)
        lines += [
            "",
            "| round | " + " | ".join(f"ours/TRL {n} (wall, cpu-norm.)" for n in names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for i in range(record["settings"]["rounds"]):
            cells = []
            for n in names:
                wall, cpu = ratios[n]["per_round"][i], ratios[n]["per_round_cpu_normalised"][i]
                cells.append("" if wall is None else f"{wall:.3f}, {cpu:.3f}")
            lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
        for stat in ("min", "median"):
            cells = [
                f"{ratios[n][stat]:.3f}, {ratios[n][stat + '_cpu_normalised']:.3f}" for n in names
            ]
            lines.append(f"| {stat} | " + " | ".join(cells) + " |")
    for name, c in record["checks"].items():
        ours_setup, trl_setup = PAIRS[name]
        o = next(r for r in runs if r["setup"] == ours_setup)
        t = next(r for r in runs if r["setup"] == trl_setup)
        same = all(c["same_samples_per_step"]) and all(c["same_rows_per_step"])
        lines += [
            "",
            (
                f"**{name}**: {'the same' if same else 'NOT the same'} micro-batches on both "
                f"sides (TRL order: {t.get('order', '?')}); losses: {c['loss_note']}; step-1 "
                f"loss ours {c['step1_loss_ours']:.6f}, TRL {c['step1_loss_trl']:.6f} "
                f"(|diff| {c['step1_loss_abs_diff']:.2e})."
            ),
            "",
            "| step | ours | TRL | same samples |",
            "|---:|---|---|---|",
        ]
        for k, (so, st) in enumerate(zip(o["steps"], t["steps"])):
            ok = "yes" if c["same_samples_per_step"][k] and c["same_rows_per_step"][k] else "no"
            lines.append(
                f"| {k + 1} | {_describe(so, c['ours_pieces'][k])} | "
                f"{_describe(st, c['trl_pieces'][k])} | {ok} |"
            )
    differ = [s for s, same in record.get("rounds_identical", {}).items() if not same]
    if differ:
        lines += ["", f"WARNING: the rounds of {differ} did not all train the same micro-batches."]
    return "\n".join(lines)


def _ratios(runs: list[dict], setups: list[str], rounds: int) -> dict:
    out = {}
    for name, (a, b) in PAIRS.items():
        if a not in setups or b not in setups:
            continue
        entry: dict = {"per_round": [], "per_round_cpu_normalised": []}
        for i in range(rounds):
            ra = next((r for r in runs if r["round"] == i and r["setup"] == a), None)
            rb = next((r for r in runs if r["round"] == i and r["setup"] == b), None)
            for suffix in ("", "_cpu_normalised"):
                key = f"real_tokens_per_s{suffix}"
                value = ra["measured"][key] / rb["measured"][key] if ra and rb else None
                entry[f"per_round{suffix}"].append(value)
        for suffix in ("", "_cpu_normalised"):
            values = [v for v in entry[f"per_round{suffix}"] if v is not None]
            entry[f"min{suffix}"] = min(values)
            entry[f"median{suffix}"] = statistics.median(values)
        out[name] = entry
    return out


def _round_order(setups: list[str], i: int) -> list[str]:
    """The setups of round i: as given, with ours/TRL of each kind swapped every other round."""
    if i % 2 == 0:
        return list(setups)
    order = list(setups)
    for a, b in PAIRS.values():
        if a in order and b in order:
            ia, ib = order.index(a), order.index(b)
            if abs(ia - ib) == 1:
                order[ia], order[ib] = order[ib], order[ia]
    return order
