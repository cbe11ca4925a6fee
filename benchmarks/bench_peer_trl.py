"""Our trainer next to TRL's SFTTrainer, on the very same tokens, padding and packing.

    python benchmarks/bench_peer_trl.py [--samples 16] [--batch 4] [--steps 6] [--warmup 2] \
        [--rounds 3] [--threads 2] [--json [PATH]] [--markdown [PATH]]
    python benchmarks/bench_peer_trl.py --dry-run     # tiny random model, seconds (the test)

The first `--samples` rows of FLAN-CoT (`data=flan_cot`, no validation split) are tokenized ONCE,
by our pipeline (the model's chat template, max_length 1024, assistant-only targets). TRL is given
exactly those token ids as a pre-tokenized `datasets.Dataset` (`input_ids` + `assistant_masks`,
which TRL 1.16 folds into its `labels`), so both sides train identical tokens with identical
supervised positions. Every setup runs in its own child process (its own peak RSS):

    ours_padding        our Recipe, collator=padding, micro-batches of --batch samples, sdpa
    trl_padding         SFTTrainer, per_device_train_batch_size=--batch, no packing, sdpa
    ours_packing        our Recipe, collator=packing (bfd, pack_length 1024), 1 pack per
                        micro-batch, attention varlen (per sample)
    trl_packing         SFTTrainer, packing=True, packing_strategy="bfd", padding_free=True,
                        1 pack per micro-batch, sdpa: the packed row has no attention_mask, so
                        transformers isolates its samples from the position_ids restarts
    trl_packing_varlen  (not run by default) trl_packing with our `varlen` attention registered in
                        transformers, to separate the trainers from the attention kernels

Same model weights (SmolLM2-135M-Instruct from the local folder; `--dry-run`: our tiny model saved
with save_pretrained), fp32, no gradient checkpointing, torch.optim.AdamW (TRL: optim=adamw_torch,
not its fused default) at the same lr, cosine schedule without warm-up, max_grad_norm 1,
grad_accum 1, the same torch threads, no evaluation, no checkpoints, no trackers.

The invariant: the same samples in the same micro-batches on both sides. TRL's train sampler is
replaced by one that yields the micro-batches of our plan, in our order (`Epochs.plan(e).steps`,
over as many epochs as the steps need): for padding the samples of each of our micro-batches,
for packing each of our packs, found among the packs TRL formed itself. Every child reports the
micro-batches it actually trained (rows, tokens per row and a digest of every sample's ids and
supervised positions); the output shows them side by side and says where they differ (TRL's bfd
may form other packs than ours: TRL's packs are then trained in TRL's order).

Measured per run, over the steps after `--warmup`: real (non-pad) tokens / wall seconds, where a
step's seconds run from the end of the previous step to the end of this one on both sides (ours:
the start of RunLog.step; TRL: on_step_end), so each includes its collation and logging; the
same per process CPU second x threads ("cpu-normalised", less sensitive to other users of the
machine); peak RSS; the step-1 loss (ours: metrics.jsonl; TRL: what training_step returns). Both
losses are token means over the micro-batch's supervised tokens (ours loss.normalization=token,
TRL nll / num_items_in_batch); the record checks that TRL's denominator equals our supervised
token count in every step and says so when it does not.

The setups run in `--rounds` rounds (ours/TRL order swapped every other round), after waiting for
a quiet machine (bench_train.py's wait_for_quiet); the load is recorded before and after every
run. The ratios ours/TRL of real tokens/s are given per round, with their min and median.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks.*` (and sft in a checkout) from the root
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_train import load1, wait_for_quiet
from benchmarks.mfu import gemm_peak_flops
from benchmarks.peer_trl_common import (
    DEFAULT_SETUPS,
    DRY,
    DRY_THREADS,
    PAIRS,
    RESULT,
    SETUPS,
    _value,
    digest,
    overrides_for,
)
from benchmarks.peer_trl_ours import child_ours
from benchmarks.peer_trl_report import _ratios, _round_order, add_mfu, compare, markdown, measure
from benchmarks.peer_trl_trl import child_trl

# --------------------------------------------------------------------------- parent: preparation


def prepare(args, work: Path) -> dict:
    """Tokenize the samples once with our pipeline, plan both batchings, save the model for TRL."""
    from sft.cli_config import compose_job
    from sft.data.cli import load
    from sft.data.targets import trained_tokens
    from sft.epochs import Epochs

    job = {
        "samples_requested": args.samples,
        "batch": args.batch,
        "steps": args.steps,
        "threads": args.threads,
        "lr": args.lr,
        "seed": 0,
        "max_length": args.max_length,
        "max_grad_norm": 1.0,
        "base_overrides": [
            "data=flan_cot",
            f"data.limit={args.samples}",
            "data.val_fraction=0",
            f"data.max_length={args.max_length}",
            f"model={args.model}",
            "model.gradient_checkpointing=false",
            "seed=0",
            f"optim.lr={args.lr}",
            "optim.warmup_ratio=0.0",
            f"train.max_steps={args.steps}",
            "train.grad_accum=1",
            "train.max_grad_norm=1.0",
            "train.progress=false",
            "train.report_to=none",
            "train.eval_every=0",
            "train.save_every=0",
            "train.resume_from=none",
        ],
    }
    loaded = load(overrides_for(job, "padding"))
    cfg, tok, data = loaded.cfg, loaded.tokenizer, loaded.data
    samples, digests = [], []
    for _, a, b in data.train:
        ids = [int(x) for x in data.tokens.ids[a:b]]
        sup = trained_tokens(data.tokens.targets, a, b)
        samples.append({"input_ids": ids, "supervised": [bool(x) for x in sup]})
        digests.append(digest(ids, sup))
    job.update(samples=samples, digests=digests, plans={})
    job["loss_normalization"] = _value(cfg.train.loss_normalization)
    for kind in ("padding", "packing"):
        kcfg, _ = compose_job([*overrides_for(job, kind), "run_dir=/tmp/sft-unused"])
        t = kcfg.train
        epochs = Epochs(
            kcfg.collator.build(kcfg.data.max_length),
            data.train,
            data.tokens.targets,
            micro_batch_size=t.micro_batch_size,
            grad_accum=1,
            world_size=1,
            seed=kcfg.seed,
            epochs=t.epochs,
            max_steps=t.max_steps,
        )
        steps = []
        for s in range(args.steps):
            e, i = epochs.locate(s)
            (mb,) = epochs.plan(e).steps[i][0]  # one rank, grad_accum 1: one micro-batch
            steps.append([[int(p) for _, _, p in row] for row in mb])
        job["plans"][kind] = steps
        if kind == "padding" and any(len(mb) != args.batch for mb in steps):
            raise SystemExit(
                f"a micro-batch of our padding plan holds fewer than --batch={args.batch} samples "
                f"({len(samples)} samples): choose --samples as a multiple of --batch"
            )
    if cfg.model.name_or_path == "tiny":  # TRL gets the very weights our Recipe builds
        from sft.models.build import load_model

        m = cfg.model
        model = load_model(
            "tiny",
            arch=m.arch,
            vocab_size=max(len(tok), m.tiny_vocab_size),
            seed=cfg.seed,
            tiny_hidden_size=m.tiny_hidden_size,
            tiny_layers=m.tiny_layers,
        )
        model_dir = work / "tiny-model"
        model.save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
    elif cfg.model.name_or_path == "smollm2":
        from sft.models.smollm2 import ensure_smollm2

        model_dir = ensure_smollm2(verbose=False)
    else:
        model_dir = Path(cfg.model.name_or_path).expanduser()
    job["model_dir"] = str(model_dir)
    return job


# --------------------------------------------------------------------------- parent: runs


def run_child(setup: str, job_path: Path, out: Path, work: Path, threads: int, timeout: int):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", setup, str(job_path)]
    cmd += [str(out), str(work)]
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS=str(threads),
    )
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return json.loads(out.read_text())


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":  # one training run, in its own process
        setup, job_path, out, work = sys.argv[2:6]
        job = json.loads(Path(job_path).read_text())
        side = child_ours if SETUPS[setup]["side"] == "ours" else child_trl
        side(job, setup, Path(out), Path(work))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setups", default=",".join(DEFAULT_SETUPS), help=f"of {list(SETUPS)}")
    p.add_argument("--model", default="smollm2_135m", help="a configs/model option")
    p.add_argument("--samples", type=int, default=16, help="the first N rows of FLAN-CoT")
    p.add_argument("--batch", type=int, default=4, help="samples per padding micro-batch")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the numbers")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads on both sides (default 2)"
    )
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--max-load", type=float, default=1.0)
    p.add_argument("--wait-max", type=float, default=1200.0, help="seconds to wait at start")
    p.add_argument("--wait-each", type=float, default=60.0, help="seconds to wait before a run")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    p.add_argument(
        "--json",
        nargs="?",
        const=str(RESULT),
        default="",
        help=f"write the full record (--json alone: {RESULT.relative_to(ROOT)})",
    )
    p.add_argument(
        "--markdown",
        nargs="?",
        const="next-to-json",
        default="",
        help="write the tables (--markdown alone: beside the record, --json's or --add-mfu's "
        "path, else the default one, as .md)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="model=tiny, 4 samples, batch 2, 3 steps (1 warm-up), 1 round, 1 thread, no waiting",
    )
    p.add_argument(
        "--add-mfu",
        metavar="RECORD",
        default="",
        help="add MFU to an existing record (the peak measured now, at its thread count) and "
        "rewrite it and its --markdown; trains nothing",
    )
    args = p.parse_args()
    if args.markdown == "next-to-json":
        args.markdown = str(Path(args.add_mfu or args.json or RESULT).with_suffix(".md"))
    if args.add_mfu:
        record = json.loads(Path(args.add_mfu).read_text())
        add_mfu(record, gemm_peak_flops(record["settings"]["threads"]))
        record["mfu_added"] = "the peak was measured after the runs, on the same machine"
        Path(args.add_mfu).write_text(json.dumps(record, indent=2) + "\n")
        table = markdown(record)
        print(table)
        if args.markdown:
            Path(args.markdown).write_text(table + "\n")
        return
    if args.dry_run:
        for key, value in DRY.items():
            setattr(args, key, value)
        args.wait_max = args.wait_each = 0.0
    if args.threads is None:
        args.threads = DRY_THREADS if args.dry_run else 2
    args.setups = [s for s in args.setups.split(",") if s]
    unknown = [s for s in args.setups if s not in SETUPS]
    if unknown or not 0 <= args.warmup < args.steps:
        p.error(f"unknown setups {unknown}" if unknown else "need 0 <= --warmup < --steps")

    from sft.config import shared_data_dir

    data_file = Path(shared_data_dir()) / "flan_cot" / "flan_cot_messages.jsonl"
    if not data_file.is_file():
        raise SystemExit(f"FLAN-CoT not found at {data_file} (set SFT_DATA_DIR)")
    import accelerate
    import datasets
    import torch
    import transformers
    import trl

    record: dict = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "accelerate": accelerate.__version__,
            "datasets": datasets.__version__,
        },
        "load": wait_for_quiet(args.max_load, args.wait_max),
    }
    if not record["load"]["quiet"]:
        print(
            f"[peer-trl] WARNING: the machine stayed loaded (load {load1():.2f}); wall-clock "
            "numbers are noisy, compare the cpu-normalised ones",
            flush=True,
        )
    work = Path(tempfile.mkdtemp(prefix="sft-bench-peer-trl-"))
    try:
        peak_before = gemm_peak_flops(args.threads)  # the machine's rate, before and after
        job = prepare(args, work)
        job_path = work / "job.json"
        job_path.write_text(json.dumps(job))
        lengths = [len(s["input_ids"]) for s in job["samples"]]
        record["settings"] = {
            **{k: getattr(args, k) for k in ("model", "samples", "batch", "steps", "warmup")},
            **{k: getattr(args, k) for k in ("rounds", "threads", "lr", "max_length")},
            "data": str(data_file),
            "model_dir": job["model_dir"],
            "train_samples": len(lengths),
            "sample_tokens": lengths,
            "supervised_tokens": [int(sum(s["supervised"])) for s in job["samples"]],
            "our_overrides": {k: overrides_for(job, k) for k in ("padding", "packing")},
            "our_plans": job["plans"],
            "loss_normalization": job["loss_normalization"],
        }
        record["setups"] = args.setups
        runs: list[dict] = []
        for i in range(args.rounds):
            for setup in _round_order(args.setups, i):
                wait = wait_for_quiet(args.max_load, args.wait_each)
                t0 = time.time()
                out = work / f"r{i}-{setup}.json"
                res = run_child(
                    setup, job_path, out, work / f"r{i}-{setup}", args.threads, args.timeout
                )
                m = measure(res["steps"], args.warmup, args.threads)
                run = {
                    "round": i,
                    "setup": setup,
                    "side": SETUPS[setup]["side"],
                    "kind": SETUPS[setup]["kind"],
                    "attention_requested": SETUPS[setup]["attn"],
                    **res,
                    "measured": m,
                    "step1_loss": res["steps"][0]["loss"],
                    "losses": [s["loss"] for s in res["steps"]],
                    "load_before": wait,
                    "load_after": round(load1(), 2),
                    "run_wall_s": round(time.time() - t0, 1),
                }
                runs.append(run)
                print(
                    f"[peer-trl] round {i + 1} {setup:18s} {m['real_tokens_per_s']:8.1f} real tok/s "
                    f"(cpu-normalised {m['real_tokens_per_s_cpu_normalised']:8.1f}), step-1 loss "
                    f"{run['step1_loss']:.6f}, peak {res['peak_rss_mb']:.0f} MB, load "
                    f"{wait['load_when_started']:.2f} -> {run['load_after']:.2f}, "
                    f"{run['run_wall_s']:.0f} s",
                    flush=True,
                )
                shutil.rmtree(work / f"r{i}-{setup}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record["runs"] = runs
    record["ratios"] = _ratios(runs, args.setups, args.rounds)
    record["checks"] = {}
    for name, (a, b) in PAIRS.items():
        ra = next((r for r in runs if r["round"] == 0 and r["setup"] == a), None)
        rb = next((r for r in runs if r["round"] == 0 and r["setup"] == b), None)
        if ra and rb:
            record["checks"][name] = compare(ra, rb, job)
    record["rounds_identical"] = {}  # did every round of a setup train the same micro-batches?
    for setup in args.setups:
        mine = [[s["samples"] for s in r["steps"]] for r in runs if r["setup"] == setup]
        record["rounds_identical"][setup] = all(m == mine[0] for m in mine)
    record["load_at_end"] = round(load1(), 2)
    # a single measurement can land in a slow moment of a shared machine (once 127 against 190
    # GFLOP/s): the better of the two, both recorded
    peaks = [peak_before, gemm_peak_flops(args.threads)]
    record["gemm_peak_flops_measured"] = peaks
    add_mfu(record, max(peaks))
    if any(math.isnan(r["step1_loss"]) for r in runs):
        print("[peer-trl] WARNING: a step-1 loss is NaN", flush=True)
    table = markdown(record)
    print(table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
