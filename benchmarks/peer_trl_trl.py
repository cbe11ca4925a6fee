"""One bench_peer_trl.py run of TRL's SFTTrainer (a child process): the parent's token ids as
a pre-tokenized dataset, a sampler that follows our plan, every micro-batch and step recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.peer_trl_common import IGNORE, SETUPS, _clock, _peak_rss_mb, _step_times, digest

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
