"""One bench_peer_trl.py run of our trainer (a child process): the Recipe on the parent's
samples, recording every micro-batch it trained and every step's wall and CPU seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.peer_trl_common import (
    IGNORE,
    SETUPS,
    _clock,
    _peak_rss_mb,
    _step_times,
    _value,
    digest,
    overrides_for,
)

# --------------------------------------------------------------------------- child: ours


def _ours_batch(batch: dict) -> dict:
    """What one of our collated micro-batches holds: rows of samples, counts, sample digests."""
    ids = batch["input_ids"].numpy()
    targets = batch["targets"].numpy()
    seq = batch["seq_idx"].numpy()
    rows, samples = [], []
    for r in range(ids.shape[0]):
        values, first = np.unique(seq[r], return_index=True)
        row = []
        for s in values[np.argsort(first)]:
            if s < 0:  # padding
                continue
            pos = np.nonzero(seq[r] == s)[0]
            sup = np.zeros(len(pos), dtype=bool)
            sup[1:] = targets[r, pos[:-1]] != IGNORE  # targets are shifted: t-1 predicts t
            row.append(len(pos))
            samples.append(digest(ids[r, pos], sup))
        rows.append(row)
    return {
        "rows": rows,
        "samples": samples,
        "real_tokens": int((seq >= 0).sum()),
        "computed_tokens": int(ids.size),
        "supervised_tokens": int((targets != IGNORE).sum()),
    }


def child_ours(job: dict, setup: str, out: Path, run_dir: Path) -> None:
    import torch

    torch.set_num_threads(job["threads"])
    from sft.cli_config import compose_job
    from sft.data.targets import trained_tokens
    from sft.trainer import Recipe

    cfg, yaml = compose_job([*overrides_for(job, SETUPS[setup]["kind"]), f"run_dir={run_dir}"])
    batches: list[dict] = []
    ends: list[tuple[float, float]] = []
    start: list[tuple[float, float]] = []
    recipe = Recipe(cfg, yaml)
    try:
        tokens = recipe.data.tokens
        mine = [
            digest(tokens.ids[a:b], trained_tokens(tokens.targets, a, b))
            for _, a, b in recipe.data.train
        ]
        if mine != job["digests"]:
            raise SystemExit("our Recipe tokenized other samples than the benchmark's parent did")
        collate, log_step = recipe.collate, recipe.log.step

        def recording_collate(rows, toks):
            if not start:
                start.append(_clock())
            batch, meta = collate(rows, toks)
            batches.append(_ours_batch(batch))
            return batch, meta

        def recording_log_step(*args, **kwargs):
            ends.append(_clock())  # the step is over: before its metrics are written
            return log_step(*args, **kwargs)

        recipe.collate = recording_collate
        recipe.log.step = recording_log_step
        recipe.export_hf = lambda path: None  # TRL saves nothing either (and RSS stays the run's)
        code = recipe.train()
        if code != 0:
            raise SystemExit(f"training exited {code}")
        threads = torch.get_num_threads()
    finally:
        recipe.close()
    metrics = [
        json.loads(line) for line in (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    metrics = [m for m in metrics if "loss" in m]
    if len(batches) != len(ends) or len(ends) != len(metrics):
        raise SystemExit(f"{len(batches)} collations, {len(ends)} step ends, {len(metrics)} rows")
    steps = []
    for k, ((wall, cpu), b, m) in enumerate(zip(_step_times(ends, start[0]), batches, metrics), 1):
        assert m["step"] == k and m["tokens"] == b["real_tokens"], (m, b)
        steps.append(
            {
                "step": k,
                "wall_s": wall,
                "cpu_s": cpu,
                "trainer_wall_s": m["tokens"] / m["tokens_per_s"],  # what the trainer measures
                "loss": m["loss"],
                "loss_denominator": m["supervised_tokens"],
                **b,
            }
        )
    out.write_text(
        json.dumps(
            {
                "steps": steps,
                "attention": recipe.attn,
                "loss_normalization": _value(cfg.train.loss_normalization),
                "torch_threads": threads,
                "peak_rss_mb": _peak_rss_mb(),
            }
        )
    )
