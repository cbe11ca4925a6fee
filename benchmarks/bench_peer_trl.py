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
import hashlib
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks.bench_train` (and sft in a checkout) from the root
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_train import load1, wait_for_quiet
from benchmarks.mfu import gemm_peak_flops, mfu

SETUPS = {
    "ours_padding": {"side": "ours", "kind": "padding", "attn": "sdpa"},
    "trl_padding": {"side": "trl", "kind": "padding", "attn": "sdpa"},
    "ours_packing": {"side": "ours", "kind": "packing", "attn": "varlen"},
    "trl_packing": {"side": "trl", "kind": "packing", "attn": "sdpa"},
    "trl_packing_varlen": {"side": "trl", "kind": "packing", "attn": "varlen"},
}
DEFAULT_SETUPS = ["ours_padding", "trl_padding", "ours_packing", "trl_packing"]
PAIRS = {  # ratio name -> (ours setup, TRL setup)
    "padding": ("ours_padding", "trl_padding"),
    "packing": ("ours_packing", "trl_packing"),
    "packing_varlen": ("ours_packing", "trl_packing_varlen"),
}
DRY = {"model": "tiny", "samples": 4, "batch": 2, "steps": 3, "warmup": 1, "rounds": 1}
DRY_THREADS = 1  # --dry-run without --threads: immune to a second user of the 2 cores
IGNORE = -100
RESULT = ROOT / "benchmarks" / "results" / "peer_trl_cpu.json"


# --------------------------------------------------------------------------- shared helpers


def digest(ids, supervised) -> str:
    """One sample: its token ids and which of its tokens are supervised (are some target)."""
    h = hashlib.sha1(np.asarray(ids, dtype=np.int64).tobytes())
    h.update(np.asarray(supervised, dtype=bool).tobytes())
    return h.hexdigest()[:16]


def overrides_for(job: dict, kind: str) -> list[str]:
    """Our trainer's overrides for one kind of batching (the parent plans with the same ones)."""
    per_kind = {
        "padding": [
            "collator=padding",
            "model.attn_implementation=sdpa",
            f"train.micro_batch_size={job['batch']}",
        ],
        "packing": [
            "collator=packing",
            "collator.strategy=bfd",
            f"collator.pack_length={job['max_length']}",
            "model.attn_implementation=varlen",
            "train.micro_batch_size=1",
        ],
    }
    return [*job["base_overrides"], *per_kind[kind]]


def _step_times(ends: list[tuple[float, float]], start: tuple[float, float]) -> list[tuple]:
    """(wall, cpu) seconds of every step from consecutive step ends; step 1 from `start`."""
    out, prev = [], start
    for end in ends:
        out.append((end[0] - prev[0], end[1] - prev[1]))
        prev = end
    return out


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _value(choice) -> str:
    return str(getattr(choice, "value", choice))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


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


# --------------------------------------------------------------------------- child: TRL


def _trl_segments(batch: dict) -> tuple[list[list[tuple[int, int, int]]], int]:
    """(rows of (row, start, end) samples, computed positions) of one TRL collated batch."""
    ids = batch["input_ids"]
    if "attention_mask" in batch:  # padding: one right-padded sample per row
        lens = batch["attention_mask"].sum(-1).tolist()
        return [[(r, 0, int(n))] for r, n in enumerate(lens)], int(ids.numel())
    cu = batch["cu_seq_lens_q"].tolist()  # padding_free: one flattened row of samples
    return [[(0, cu[i], cu[i + 1]) for i in range(len(cu) - 1) if cu[i + 1] > cu[i]]], int(
        ids.numel()
    )


def _trl_batch(batch: dict) -> dict:
    ids, labels = batch["input_ids"].numpy(), batch["labels"].numpy()
    rows, computed = _trl_segments(batch)
    samples, supervised = [], 0
    for row in rows:
        for r, a, b in row:
            sup = labels[r, a:b] != IGNORE  # labels are not shifted: t is trained from t-1
            sup[0] = False  # a sample's first token is never predicted
            supervised += int(sup.sum())
            samples.append(digest(ids[r, a:b], sup))
    return {
        "rows": [[b - a for _, a, b in row] for row in rows],
        "samples": samples,
        "real_tokens": sum(b - a for row in rows for _, a, b in row),
        "computed_tokens": computed,
        "supervised_tokens": supervised,
    }


def _trl_packs(dataset, digests: list[str]) -> list[list[int]]:
    """The samples (our piece indices) of every pack TRL formed, from its packed dataset."""
    where = {d: i for i, d in enumerate(digests)}
    packs = []
    for ex in dataset:
        ids, labels, pos, pack = np.asarray(ex["input_ids"]), np.asarray(ex["labels"]), 0, []
        for n in ex["seq_lengths"]:
            sup = labels[pos : pos + n] != IGNORE
            sup[0] = False
            pack.append(where.get(digest(ids[pos : pos + n], sup), -1))
            pos += n
        packs.append(pack)
    return packs


def child_trl(job: dict, setup: str, out: Path, work: Path) -> None:
    import torch

    torch.set_num_threads(job["threads"])
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    spec = SETUPS[setup]
    packing = spec["kind"] == "packing"
    if spec["attn"] == "varlen":
        from sft.models.attention import register_varlen

        register_varlen()
    model = AutoModelForCausalLM.from_pretrained(
        job["model_dir"], dtype=torch.float32, attn_implementation=spec["attn"]
    )
    tokenizer = AutoTokenizer.from_pretrained(job["model_dir"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    samples = job["samples"]  # in our piece order: row i of the dataset is our piece i
    train = datasets.Dataset.from_dict(
        {
            "input_ids": [s["input_ids"] for s in samples],
            "assistant_masks": [[int(m) for m in s["supervised"]] for s in samples],
        }
    )
    args = SFTConfig(
        output_dir=str(work),
        max_steps=job["steps"],
        per_device_train_batch_size=1 if packing else job["batch"],
        gradient_accumulation_steps=1,
        learning_rate=job["lr"],
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=job["max_grad_norm"],
        optim="adamw_torch",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        max_length=job["max_length"],
        packing=packing,
        packing_strategy="bfd",
        padding_free=packing,
        completion_only_loss=False,
        assistant_only_loss=False,
        shuffle_dataset=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        seed=job["seed"],
        data_seed=job["seed"],
    )

    class FixedOrder(torch.utils.data.Sampler):
        def __init__(self, order: list[int]) -> None:
            self.order = order

        def __iter__(self):
            return iter(self.order)

        def __len__(self) -> int:
            return len(self.order)

    class PeerTrainer(SFTTrainer):
        """SFTTrainer whose sampler follows our plan, recording each step's loss and denominator."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.order: list[int] = []  # set once TRL has prepared (and packed) its dataset
            self.losses: list[float] = []
            self.denominators: list[int | None] = []

        def _get_train_sampler(self, train_dataset=None):
            return FixedOrder(self.order)

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            self.losses.append(float(loss))
            n = num_items_in_batch
            self.denominators.append(int(n) if n is not None else None)
            return loss

    ends: list[tuple[float, float]] = []
    start: list[tuple[float, float]] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(_clock())

    trainer = PeerTrainer(
        model=model,
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
        callbacks=[StepClock()],
    )
    plan = job["plans"][spec["kind"]]  # step -> rows -> our piece indices
    info: dict = {}
    if packing:
        packs = _trl_packs(trainer.train_dataset, job["digests"])
        index = {tuple(sorted(p)): j for j, p in enumerate(packs)}
        ours = [tuple(sorted(step[0])) for step in plan]
        if all(p in index for p in ours):
            trainer.order = [index[p] for p in ours]
            info["order"] = "ours: every one of our packs is one of TRL's, trained in our order"
        else:
            trainer.order = [k % len(packs) for k in range(job["steps"])]
            info["order"] = "TRL's own: its packs differ from ours, trained in TRL's order"
        info["trl_packs"] = packs
    else:
        prepared = trainer.train_dataset
        seen = [
            digest(ex["input_ids"], [False] + [lab != IGNORE for lab in ex["labels"][1:]])
            for ex in prepared
        ]
        if seen != job["digests"]:
            raise SystemExit("TRL's prepared dataset differs from the samples it was given")
        trainer.order = [p for step in plan for row in step for p in row]
        info["order"] = "ours: the samples of our micro-batches, in our order"
    batches: list[dict] = []
    collate = trainer.data_collator

    def recording_collator(examples):
        if not start:
            start.append(_clock())
        batch = collate(examples)
        batches.append(_trl_batch(batch))
        return batch

    trainer.data_collator = recording_collator
    trainer.train()
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    n = job["steps"]
    if not (len(batches) == len(ends) == len(trainer.losses) == n):
        raise SystemExit(
            f"{len(batches)} collations, {len(ends)} step ends, {len(trainer.losses)} losses, "
            f"expected {n} steps"
        )
    steps = [
        {
            "step": k,
            "wall_s": wall,
            "cpu_s": cpu,
            "loss": trainer.losses[k - 1],
            "loss_logged": logged[k - 1] if k <= len(logged) else None,
            "loss_denominator": trainer.denominators[k - 1],
            **batches[k - 1],
        }
        for k, (wall, cpu) in enumerate(_step_times(ends, start[0]), 1)
    ]
    out.write_text(
        json.dumps(
            {
                "steps": steps,
                "attention": model.config._attn_implementation,
                "torch_threads": torch.get_num_threads(),
                "peak_rss_mb": _peak_rss_mb(),
                **info,
            }
        )
    )


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
        const=str(RESULT.with_suffix(".md")),
        default="",
        help="write the tables (--markdown alone: next to the default JSON)",
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
    add_mfu(record, gemm_peak_flops(args.threads))
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
