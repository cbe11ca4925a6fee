"""The training recipe: small `_setup_*` steps, then one explicit loop on Accelerate.

One optimizer step, in order (the loss normalisation lives in one visible place):
  1. every rank takes its micro-batches of this step from the epoch plan (same plan everywhere)
  2. one all-reduce of [loss units, tokens, pads, samples]: the global denominator of the step
  3. forward/backward every micro-batch; loss = unit-loss sum * world * accum / global units, so
     after DDP's mean over ranks and Accelerate's division by `grad_accum` the gradient is exactly
     (sum of token losses of the step) / (supervised tokens of the step)
  4. clip, then skip the update if the loss or the gradient norm is not finite on any rank
  5. optimizer and schedule step, log, evaluate, checkpoint, honour a pre-emption request

Invariant: for the same samples in a step, the update is the same under padding, packing and
padding_free, for any micro-batch split or number of processes (tests/test_trainer.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from sft import checkpoint as ckpt
from sft.config import JobConfig
from sft.data.collators import build_collator
from sft.data.dataset import PreparedData, prepare_data
from sft.data.plan import EpochPlan, build_rows, plan_epoch
from sft.errors import UserError
from sft.loss import count_units, micro_batch_loss
from sft.metrics import MetricsWriter
from sft.models.build import apply_lora, load_model, load_tokenizer, resolve_attn_implementation
from sft.startup import check_setup, check_wrapped, deepspeed_offload, env_world_size

log = logging.getLogger("sft")
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpoint saved after SIGTERM/SIGUSR1; requeue and rerun
EXIT_BAD_STEPS = 3
EXIT_OOM = 4


class Recipe:
    def __init__(self, cfg: JobConfig, config_yaml: str) -> None:
        self.cfg = cfg
        self.config_yaml = config_yaml
        self.run_dir = Path(cfg.run_dir)
        self.stop_requested = False

    # ----------------------------------------------------------------------------- setup
    def setup(self) -> None:
        self._install_signal_handlers()  # first: a SIGTERM during setup is honoured at step 1
        self._setup_accelerator()
        self._setup_model()
        self._setup_data()
        self._setup_optimizer()
        self._setup_outputs()
        self._resume()

    def _setup_accelerator(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs, set_seed

        cfg = self.cfg
        cuda = torch.cuda.is_available() and os.environ.get(
            "ACCELERATE_USE_CPU", ""
        ).lower() not in ("1", "true")
        backend = (
            cfg.distributed.backend
            if cfg.distributed.backend != "auto"
            else ("nccl" if cuda else "gloo")
        )
        launched = (env_world_size() or 1) > 1
        # gloo on CPU: without it DeepSpeed ranks each believe they are rank 0 of 1
        handlers = (
            [
                InitProcessGroupKwargs(
                    backend=backend, timeout=timedelta(minutes=cfg.distributed.timeout_minutes)
                )
            ]
            if launched
            else []
        )
        self.accelerator = acc = Accelerator(
            gradient_accumulation_steps=cfg.train.grad_accum,
            mixed_precision="bf16"
            if cfg.model.dtype == "bf16"
            else ("fp16" if cfg.model.dtype == "fp16" else "no"),
            # cpu=True would make Accelerate drop DeepSpeed; DeepSpeed finds the CPU by itself
            kwargs_handlers=handlers,
            cpu=not cuda and os.environ.get("ACCELERATE_USE_DEEPSPEED") != "true",
        )
        ds = acc.state.deepspeed_plugin
        zero_stage = int(ds.zero_stage) if ds is not None else 0
        check_setup(
            expected=cfg.distributed.name,
            expect_processes=cfg.distributed.expect_processes,
            expect_zero_stage=cfg.distributed.zero_stage,
            distributed_type=acc.distributed_type.value,
            num_processes=acc.num_processes,
            zero_stage=zero_stage,
            env_world_size=env_world_size(),
            cuda=cuda,
            offload=deepspeed_offload(ds.deepspeed_config) if ds is not None else None,
            use_cpu_env=os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true"),
        )
        if ds is not None:  # one value in one place: our config owns batch sizes and clipping
            conf = ds.deepspeed_config
            conf["train_micro_batch_size_per_gpu"] = cfg.train.micro_batch_size
            conf["gradient_accumulation_steps"] = cfg.train.grad_accum
            conf["train_batch_size"] = (
                cfg.train.micro_batch_size * cfg.train.grad_accum * acc.num_processes
            )
            conf["gradient_clipping"] = cfg.train.max_grad_norm
            conf.setdefault("zero_optimization", {})[
                "stage3_gather_16bit_weights_on_model_save"
            ] = True
        self.cuda = cuda
        self.world = acc.num_processes
        self.rank = acc.process_index
        set_seed(cfg.seed)

    def _setup_model(self) -> None:
        cfg, m = self.cfg, self.cfg.model
        self.attn = resolve_attn_implementation(m.attn_implementation, cfg.collator.name, self.cuda)
        if cfg.collator.name != "padding" and not cfg.collator.isolate:
            log.warning(
                "collator.isolate=false: packed samples ATTEND TO EACH OTHER (the seed paper's leaky "
                "setup); use it only to measure that leak"
            )
            self.attn = "sdpa" if self.attn == "varlen" else self.attn
        with self.accelerator.main_process_first():
            self.tokenizer = load_tokenizer(m.name_or_path, m.trust_remote_code, m.chat_template)
        # ZeRO-3 init partitions weights with collectives while they are built: all ranks build together
        from transformers.integrations import is_deepspeed_zero3_enabled

        together = is_deepspeed_zero3_enabled()
        # bf16 without DeepSpeed: fp32 master weights + bf16 autocast (pure bf16 AdamW loses small
        # updates); DeepSpeed keeps its own fp32 master copy, so it loads bf16 weights directly
        load_dtype = (
            "fp32"
            if m.dtype == "bf16"
            and self.accelerator.state.deepspeed_plugin is None
            and not m.lora.enabled
            else m.dtype
        )
        with contextlib.nullcontext() if together else self.accelerator.main_process_first():
            self.model = load_model(
                m.name_or_path,
                arch=m.arch,
                dtype=load_dtype,
                attn_implementation=self.attn,
                gradient_checkpointing=m.gradient_checkpointing,
                trust_remote_code=m.trust_remote_code,
                dropout=m.dropout,
                vocab_size=len(self.tokenizer),
                seed=cfg.seed,
                tiny_hidden_size=m.tiny_hidden_size,
                tiny_layers=m.tiny_layers,
            )
        if m.lora.enabled:
            if m.lora.qlora and not self.cuda:
                raise UserError(
                    "model.lora.qlora=true needs a CUDA GPU (4-bit bitsandbytes); use plain LoRA on CPU"
                )
            self.model = apply_lora(
                self.model, m.lora.r, m.lora.alpha, m.lora.dropout, m.lora.target_modules
            )

    def _setup_data(self) -> None:
        cfg, d = self.cfg, self.cfg.data
        with self.accelerator.main_process_first():
            self.data: PreparedData = prepare_data(
                self.tokenizer,
                path=d.path,
                split=d.split,
                fmt=d.format,
                val_path=d.val_path,
                val_fraction=d.val_fraction,
                val_max_samples=d.val_max_samples,
                max_length=d.max_length,
                overlong=d.overlong,
                train_on=d.train_on,
                limit=d.limit,
                num_proc=d.num_proc,
                max_bad_fraction=d.max_bad_fraction,
                system_prompt=d.system_prompt,
                demo_size=d.demo_size,
                builder=d.builder,
                builder_args=dict(d.builder_args),
                seed=cfg.seed,
                progress=self.accelerator.is_main_process,
            )
        c = cfg.collator
        self.capacity = c.pack_length or d.max_length
        if c.name == "packing" and self.capacity < d.max_length and d.overlong != "split":
            raise UserError(
                f"collator.pack_length={self.capacity} < data.max_length={d.max_length}: samples "
                "could not fit a pack; raise pack_length or lower data.max_length"
            )
        flatten = self.attn in ("varlen", "flash_attention_2", "flash_attention_3")
        self.collate = build_collator(
            c.name,
            pad_id=self.tokenizer.pad_token_id,
            pad_to_multiple_of=c.pad_to_multiple_of,
            flatten=flatten,
            isolate=c.isolate,
        )
        self._plans: dict[int, EpochPlan] = {}
        self._epoch_steps: dict[int, int] = {}
        self.steps_per_epoch = self.epoch_steps(0)
        t = cfg.train
        if t.max_steps > 0:
            self.total_steps = t.max_steps
        else:
            full, frac = int(t.epochs), t.epochs - int(t.epochs)
            self.total_steps = sum(self.epoch_steps(e) for e in range(full)) + math.ceil(
                frac * self.epoch_steps(full)
            )
        self.labels_of = lambda a, b: self._labels(a, b)

    def _labels(self, a: int, b: int) -> np.ndarray:
        return self.data.tokens.labels(a, b)

    def plan(self, epoch: int) -> EpochPlan:
        if epoch not in self._plans:
            c, t = self.cfg.collator, self.cfg.train
            self._plans = {k: v for k, v in self._plans.items() if k == 0 or k >= epoch - 1}
            self._plans[epoch] = plan_epoch(
                self.data.train,
                self.data.tokens.mask,
                kind=c.name,
                micro_batch_size=t.micro_batch_size,
                grad_accum=t.grad_accum,
                world_size=self.world,
                seed=self.cfg.seed,
                epoch=epoch,
                capacity=self.capacity,
                strategy=c.strategy,
                replan_each_epoch=c.replan_each_epoch,
                group_by_length=c.group_by_length,
            )
        return self._plans[epoch]

    def _setup_optimizer(self) -> None:
        o, acc = self.cfg.optim, self.accelerator
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)
        self.model, self.optimizer = acc.prepare(self.model, opt)
        check_wrapped(
            self.cfg.distributed.name, self.world, [c.__name__ for c in type(self.model).__mro__]
        )
        warmup = int(o.warmup_ratio * self.total_steps)
        total, kind, floor = self.total_steps, o.schedule, o.min_lr_ratio

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / max(1, warmup)
            if kind == "constant":
                return 1.0
            prog = min(1.0, (step - warmup) / max(1, total - warmup))
            f = 0.5 * (1 + math.cos(math.pi * prog)) if kind == "cosine" else 1 - prog
            return floor + (1 - floor) * f

        base = getattr(self.optimizer, "optimizer", self.optimizer)
        while not isinstance(
            base, torch.optim.Optimizer
        ):  # DeepSpeed's ZeRO wrapper holds the AdamW
            base = base.optimizer
        # stepped by us once per optimizer step (Accelerate's wrapper would step it once per process)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(base, factor)
        # its state travels as JSON in trainer_state.json (save/_resume), not through
        # register_for_checkpointing: Accelerate unpickles custom objects with weights_only=False

    def _setup_outputs(self) -> None:
        acc = self.accelerator
        self.ckpt_root = self.run_dir / "checkpoints"
        self.config_yaml = ckpt.redact_secrets(
            self.config_yaml
        )  # no token reaches config.yaml/checkpoints
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(self.config_yaml)
            for p in ckpt.remove_stale(self.ckpt_root):
                log.warning("removed a half-written checkpoint %s", p)
            (self.run_dir / "data_report.json").write_text(
                json.dumps(self.data.report.to_dict(), indent=2)
            )
        acc.wait_for_everyone()
        self.step = 0
        self.totals = {
            "samples": 0,
            "tokens": 0,
            "supervised_tokens": 0,
            "pad_tokens": 0,
            "skipped_steps": 0,
            "train_s": 0.0,
        }

    def _resume(self) -> None:
        r, acc = self.cfg.train.resume_from, self.accelerator
        path = (
            ckpt.latest_checkpoint(self.ckpt_root)
            if r == "latest"
            else (None if r == "none" else Path(r))
        )
        if path is not None and not ckpt.is_valid(path):
            raise UserError(
                f"train.resume_from={r}: {path} is not a complete checkpoint (no valid manifest)"
            )
        if path is not None:
            state = ckpt.load_checkpoint(
                acc, path, self._compat()
            )  # refuses another world/batch/model/data
            self.step = state["step"]
            self.totals = state["totals"]
            self.scheduler.load_state_dict(state["scheduler"])
            if (
                state["epoch"] >= 0
                and self.step < self.total_steps
                and list(self.locate(self.step)) != [state["epoch"], state["step_in_epoch"]]
            ):
                raise UserError(
                    f"cannot resume from {path}: its data position (epoch {state['epoch']}, step "
                    f"{state['step_in_epoch']}) differs from this run's plan; use a new run_dir"
                )
            if acc.is_main_process:
                print(f"[sft] resumed from {path} at step {self.step}", flush=True)
        # one line per step: drop what a killed run logged after the checkpoint we restart from
        keep = self.step if path is not None else -1
        if acc.is_main_process:
            ckpt.truncate_step_log(self.run_dir / "metrics.jsonl", keep)
        ckpt.truncate_step_log(self.run_dir / "samples" / f"rank{self.rank}.jsonl", keep)

    def _compat(self) -> dict:
        """What must match for a checkpoint to resume exactly (checked before anything is loaded)."""
        c, acc = self.cfg, self.accelerator
        ds = acc.state.deepspeed_plugin
        model = acc.unwrap_model(self.model)
        shapes = [(n, list(getattr(p, "ds_shape", p.shape))) for n, p in model.named_parameters()]
        if not hasattr(self, "_data_fingerprint"):
            self._data_fingerprint = ckpt.fingerprint(self.data.train, len(self.data.tokens.ids))
        return {
            "world_size": self.world,
            "engine": acc.distributed_type.value
            + (f"/zero{ds.zero_stage}" if ds is not None else ""),
            "micro_batch_size": c.train.micro_batch_size,
            "grad_accum": c.train.grad_accum,
            "collator": f"{c.collator.name}/{c.collator.strategy}/{self.capacity}",
            "model": c.model.name_or_path,
            "model_shapes": ckpt.fingerprint(shapes),
            "data": self._data_fingerprint,
            "seed": c.seed,
        }

    # ----------------------------------------------------------------------------- loop
    def locate(self, step: int) -> tuple[int, int]:
        epoch = 0
        while step >= self.epoch_steps(epoch):
            step -= self.epoch_steps(epoch)
            epoch += 1
        return epoch, step

    def epoch_steps(self, epoch: int) -> int:
        """Optimizer steps of an epoch (cached: plans themselves are kept only for the current epoch)."""
        if epoch not in self._epoch_steps:
            self._epoch_steps[epoch] = len(self.plan(epoch))
        return self._epoch_steps[epoch]

    def _all_reduce(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        if self.world > 1:
            t = self.accelerator.reduce(t, reduction="sum")
        return t.tolist()

    def _to_device(self, batch: dict) -> dict:
        dev = self.accelerator.device
        return {
            k: v.to(dev, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
        }

    def train(self) -> int:
        cfg, acc, t = self.cfg, self.accelerator, self.cfg.train
        self._install_signal_handlers()
        self.metrics = MetricsWriter(
            self.run_dir,
            acc.is_main_process,
            t.tensorboard,
            self.total_steps,
            t.progress,
            self.step,
        )
        norm = t.loss_normalization
        if t.eval_at_start and self.step == 0:
            self.evaluate()
        bad_in_row = 0
        exit_code = 0
        faults = _test_faults()
        self.model.train()
        while self.step < self.total_steps:
            t0 = time.perf_counter()
            epoch, idx = self.locate(self.step)
            plan = self.plan(epoch)
            fault = faults.get((self.step + 1, self.rank), faults.get((self.step + 1, None)))
            mbs = [
                self.collate(rows, self.data.tokens.ids, self.labels_of)
                for rows in plan.steps[idx][self.rank]
            ]
            if any(
                m.targets == 0 for _, m in mbs
            ):  # the data pipeline guarantees it; never feed the loss 0/0
                raise RuntimeError(
                    f"step {self.step + 1}: a micro-batch without any supervised target token "
                    f"(pieces {[m.piece_ids for _, m in mbs if m.targets == 0]})"
                )
            units_local = sum(count_units(m.targets, len(m.piece_ids), norm) for _, m in mbs)
            g_units, g_tokens, g_pads, g_samples, g_targets = self._all_reduce(
                [
                    units_local,
                    sum(m.tokens for _, m in mbs),
                    sum(m.pad_tokens for _, m in mbs),
                    sum(m.samples for _, m in mbs),
                    sum(m.targets for _, m in mbs),
                ]
            )
            scale = self.world * t.grad_accum / g_units
            loss_local = torch.zeros((), dtype=torch.float64, device=acc.device)
            for i, (batch, _) in enumerate(mbs):
                last = i == len(mbs) - 1
                acc.sync_gradients = last
                ctx = contextlib.nullcontext() if last else acc.no_sync(self.model)
                with ctx, acc.autocast():
                    if fault == "oom":
                        raise torch.OutOfMemoryError("out of memory (injected by SFT_TEST_FAULT)")
                    unit_sum, _ = micro_batch_loss(self.model, self._to_device(batch), norm)
                    if fault == "nan":
                        unit_sum = unit_sum * float("nan")
                    acc.backward(unit_sum * scale)
                loss_local += unit_sum.detach().double()
            grad_norm = (
                acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
                if t.max_grad_norm > 0
                else torch.tensor(0.0)
            )
            while (
                fault == "stall" and not self.stop_requested
            ):  # a hung rank (the launcher's SIGTERM ends it)
                time.sleep(0.1)
            # one collective agrees on the loss, a pre-emption request and which ranks saw a non-finite loss
            bad_local = not math.isfinite(float(loss_local))
            reduced = self._all_reduce(
                [float(loss_local), float(self.stop_requested)]
                + [float(bad_local and r == self.rank) for r in range(self.world)]
            )
            loss_sum, stop_votes = reduced[0], reduced[1]
            loss = loss_sum / g_units
            gnorm = float(grad_norm) if grad_norm is not None else float("nan")
            finite = math.isfinite(loss) and math.isfinite(gnorm)
            if finite:
                self.optimizer.step()
                bad_in_row = 0
            else:  # every rank skips the update; step, schedule and data position still advance
                self.totals["skipped_steps"] += 1
                bad_in_row += 1
                bad_ranks = [r for r, v in enumerate(reduced[2:]) if v > 0] or list(
                    range(self.world)
                )
                self._last_bad = (
                    self.step + 1,
                    bad_ranks,
                    self._sample_ids(plan.steps[idx], bad_ranks),
                )
                log.error(
                    "step %d: non-finite loss=%s grad_norm=%s (ranks %s); update skipped; samples %s",
                    self.step + 1,
                    loss,
                    gnorm,
                    bad_ranks,
                    self._last_bad[2][:8],
                )
            self.optimizer.zero_grad(set_to_none=True)
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            self.step += 1
            dt = time.perf_counter() - t0
            self._account(g_samples, g_tokens, g_targets, g_pads, dt)
            if self.step % t.log_every == 0 or self.step == self.total_steps or not finite:
                self._log_step(
                    epoch,
                    idx,
                    plan,
                    loss,
                    lr,
                    gnorm,
                    g_samples,
                    g_tokens,
                    g_targets,
                    g_pads,
                    dt,
                    finite,
                )
            if cfg.train.record_samples:
                self._record_samples(mbs)
            if t.eval_every and self.step % t.eval_every == 0:
                self.evaluate()
            if bad_in_row >= t.max_bad_steps:
                if acc.is_main_process:
                    step, ranks, ids = self._last_bad
                    last = ckpt.latest_checkpoint(self.ckpt_root)
                    print(
                        f"error: aborting at step {step}: {bad_in_row} non-finite steps in a row "
                        f"(train.max_bad_steps={t.max_bad_steps}); non-finite loss on rank(s) {ranks}, samples "
                        f"{ids[:8]}; last good checkpoint: {last if last else 'none'} (intact)",
                        file=sys.stderr,
                        flush=True,
                    )
                exit_code = EXIT_BAD_STEPS
                break
            if stop_votes > 0:
                self.save()
                if acc.is_main_process:
                    print(
                        f"[sft] pre-empted: checkpoint step-{self.step} saved; exit {EXIT_PREEMPTED} (requeue to resume)",
                        flush=True,
                    )
                exit_code = EXIT_PREEMPTED
                break
            if t.save_every and self.step % t.save_every == 0 and self.step < self.total_steps:
                self.save()
        if exit_code == 0:
            if t.save_every:
                self.save()
            self.export_final()
            just_evaluated = bool(cfg.train.eval_every) and self.step % cfg.train.eval_every == 0
            if (cfg.train.eval_every or cfg.train.eval_at_start) and not just_evaluated:
                self.evaluate()
            if cfg.train.benchmark_tasks:
                self.benchmark(self.run_dir)
        self.write_summary(exit_code)
        self.metrics.close()
        return exit_code

    def _account(self, samples, tokens, targets, pads, dt) -> None:
        tt = self.totals
        tt["samples"] += int(samples)
        tt["tokens"] += int(tokens)
        tt["supervised_tokens"] += int(targets)
        tt["pad_tokens"] += int(pads)
        tt["train_s"] += dt

    def _log_step(
        self, epoch, idx, plan, loss, lr, gnorm, samples, tokens, targets, pads, dt, finite
    ) -> None:
        row = {
            "step": self.step,
            "epoch": round(epoch + (idx + 1) / len(plan), 4),
            "loss": loss,
            "lr": lr,
            "grad_norm": gnorm,
            "samples": int(samples),
            "tokens": int(tokens),
            "supervised_tokens": int(targets),
            "pad_tokens": int(pads),
            "tokens_per_s": tokens / dt,
            "samples_per_s": samples / dt,
            "elapsed_s": self.totals["train_s"],
            "total_tokens": self.totals["tokens"],
            "total_supervised_tokens": self.totals["supervised_tokens"],
            "total_samples": self.totals["samples"],
            "steps_per_epoch": len(plan),
        }
        if "pack_efficiency" in plan.stats:
            row["pack_efficiency"] = plan.stats["pack_efficiency"]
        if not finite:
            row["skipped"] = True
        self.metrics.log(row)

    def _sample_ids(self, step_plan, ranks: list[int]) -> list[str]:
        """Where the samples of the given ranks in one step come from (file:line), from the shared plan."""
        pieces = sorted({p for r in ranks for mb in step_plan[r] for row in mb for _, _, p in row})
        return [self.data.tokens.row_ids[int(self.data.train[p, 0])] for p in pieces]

    def _record_samples(self, mbs) -> None:
        d = self.run_dir / "samples"
        d.mkdir(parents=True, exist_ok=True)
        ids = [[int(p) for p in m.piece_ids] for _, m in mbs]
        with open(d / f"rank{self.rank}.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, "pieces": ids}) + "\n")

    # ----------------------------------------------------------------------------- eval
    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Token-mean loss over the validation pieces, identical under every collator."""
        if len(self.data.val) == 0:
            return None
        c, t = self.cfg.collator, self.cfg.train
        rows, _ = build_rows(
            self.data.val,
            self.data.tokens.mask,
            kind=c.name,
            capacity=self.capacity,
            strategy="bfd" if c.strategy == "random_concat" else c.strategy,
            seed=0,
            epoch=0,
            replan_each_epoch=False,
        )
        mb_rows = [
            rows[i : i + t.eval_micro_batch_size]
            for i in range(0, len(rows), t.eval_micro_batch_size)
        ]
        mine = mb_rows[self.rank :: self.world]
        n_max = -(-len(mb_rows) // self.world)
        self.model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.accelerator.device)
        count = 0
        for j in range(n_max):  # every rank runs the same number of forwards (ZeRO-3 gathers)
            rows_j = mine[j] if j < len(mine) else mb_rows[0]
            batch, meta = self.collate(rows_j, self.data.tokens.ids, self.labels_of)
            with self.accelerator.autocast():
                s, _ = micro_batch_loss(self.model, self._to_device(batch), "token")
            if j < len(mine):
                loss_sum += s.double()
                count += meta.targets
        self.model.train()
        total, n = self._all_reduce([float(loss_sum), count])
        value = total / max(n, 1)
        self.metrics.log({"step": self.step, "eval_loss": value, "eval_tokens": int(n)})
        self.last_eval = value
        return value

    # ----------------------------------------------------------------------------- outputs
    def save(self) -> None:
        epoch, idx = self.locate(self.step) if self.step < self.total_steps else (-1, -1)
        state = {
            "step": self.step,
            "epoch": epoch,
            "step_in_epoch": idx,
            "seed": self.cfg.seed,
            "totals": self.totals,
            "scheduler": self.scheduler.state_dict(),
        }
        t = self.cfg.train
        hf = t.checkpoint_hf_model or bool(t.benchmark_tasks)
        path = ckpt.save_checkpoint(
            self.accelerator,
            self.ckpt_root,
            self.step,
            state,
            self.config_yaml,
            t.keep_last,
            compat=self._compat(),
            extra=(lambda tmp: self.export_hf(tmp / "model")) if hf else None,
        )
        if t.benchmark_tasks and self.step < self.total_steps:  # the last one runs on final/
            self.benchmark(path)

    def benchmark(self, target: Path) -> None:
        """lm_eval benchmarks on a committed checkpoint or final/ (rank 0; the others wait)."""
        t = self.cfg.train
        if self.accelerator.is_main_process:
            from sft.eval import evaluate

            results = evaluate(target, t.benchmark_tasks, t.benchmark_limit or None)
            print(
                f"[sft] step {self.step}: benchmarks {results if len(str(results)) < 300 else 'done'} "
                f"(run_dir/eval/)",
                flush=True,
            )
        self.accelerator.wait_for_everyone()

    def export_final(self) -> None:
        self.export_hf(self.run_dir / "final")

    def export_hf(self, out: Path) -> None:
        """Collective: gather the weights and save an HF model folder + tokenizer (rank 0 writes)."""
        acc = self.accelerator
        state_dict = acc.get_state_dict(self.model)
        model = acc.unwrap_model(self.model)
        if acc.is_main_process:
            if hasattr(model, "merge_and_unload"):  # LoRA: merge so final/ loads as a plain model
                model.load_state_dict(state_dict)
                model = model.merge_and_unload()
                state_dict = model.state_dict()
            model.config.use_cache = True
            model.save_pretrained(out, state_dict=state_dict, safe_serialization=True)
            model.config.use_cache = False
            self.tokenizer.save_pretrained(out)
        acc.wait_for_everyone()

    def write_summary(self, exit_code: int) -> None:
        if not self.accelerator.is_main_process:
            return
        tt, c = self.totals, self.cfg
        plan0 = self.plan(0)
        padded = tt["tokens"] + tt["pad_tokens"]
        summary = {
            "run_name": c.run_name or self.run_dir.name,
            "collator": c.collator.name,
            "strategy": c.collator.strategy if c.collator.name == "packing" else None,
            "model": c.model.name_or_path,
            "attn_implementation": self.attn,
            "steps": self.step,
            "epochs": round(self.step / max(len(plan0), 1), 4),
            "steps_per_epoch": len(plan0),
            "world_size": self.world,
            "wall_s": tt["train_s"],
            "train_tokens": tt["tokens"],
            "supervised_tokens": tt["supervised_tokens"],
            "pad_tokens": tt["pad_tokens"],
            "samples": tt["samples"],
            "padding_ratio": padded / max(tt["tokens"], 1),
            "pack_efficiency": plan0.stats.get("pack_efficiency"),
            "tokens_per_s": tt["tokens"] / max(tt["train_s"], 1e-9),
            "samples_per_s": tt["samples"] / max(tt["train_s"], 1e-9),
            "peak_memory_mb": _peak_memory_mb(self.cuda),
            "final_loss": self._last_loss(),
            "final_eval_loss": getattr(self, "last_eval", None),
            "skipped_steps": tt["skipped_steps"],
            "dropped_tail_samples_per_epoch": plan0.dropped_tail,
            "dropped_fragments_per_epoch": plan0.dropped_fragments,
            "exit_code": exit_code,
            "data": self.data.report.to_dict()["counts"],
        }
        (self.run_dir / "summary.json").write_text(
            ckpt.redact_secrets(json.dumps(summary, indent=2))
        )

    def _last_loss(self) -> float | None:
        path = self.run_dir / "metrics.jsonl"
        last = None
        if path.exists():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                if "loss" in row:
                    last = row["loss"]
        return last

    def _install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            rank = getattr(self, "rank", os.environ.get("RANK", "0"))
            print(
                f"[sft] rank {rank}: got signal {signum}; saving at the next step boundary",
                flush=True,
            )
            self.stop_requested = True
            # later signals are ignored by the OS, also while the checkpoint is written and during
            # interpreter shutdown (Python resets its own handlers there, never SIG_IGN)
            for s in (signal.SIGTERM, signal.SIGUSR1):
                signal.signal(s, signal.SIG_IGN)

        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, handler)

    def oom_message(self) -> str:
        """One actionable line for an out-of-memory error on this rank (see `oom_advice`)."""
        c, acc = self.cfg, getattr(self, "accelerator", None)
        ds = acc.state.deepspeed_plugin if acc is not None else None
        zero = ds.deepspeed_config.get("zero_optimization", {}) if ds is not None else {}
        offload = (
            "/".join(
                sorted(
                    {
                        str(zero.get(k, {}).get("device", "none"))
                        for k in ("offload_optimizer", "offload_param")
                    }
                )
            )
            if zero
            else "none"
        )
        return oom_advice(
            rank=getattr(self, "rank", 0),
            step=getattr(self, "step", 0) + 1,
            micro_batch_size=c.train.micro_batch_size,
            grad_accum=c.train.grad_accum,
            collator=c.collator.name,
            pack_length=c.collator.pack_length or c.data.max_length,
            zero_stage=int(zero.get("stage", 0)) if zero else 0,
            offload=offload,
            gradient_checkpointing=c.model.gradient_checkpointing,
            cuda=bool(getattr(self, "cuda", False)),
        )

    def close(self) -> None:
        if hasattr(self, "accelerator"):
            self.accelerator.end_training()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def oom_advice(
    *,
    rank: int,
    step: int,
    micro_batch_size: int,
    grad_accum: int,
    collator: str,
    pack_length: int,
    zero_stage: int,
    offload: str,
    gradient_checkpointing: bool,
    cuda: bool,
) -> str:
    """What ran out of memory and the knobs to turn, cheapest first, in one line."""
    rows = (
        f"{micro_batch_size} packs of {pack_length} tokens"
        if collator == "packing"
        else f"{micro_batch_size} samples of up to {pack_length} tokens"
    )
    tips = []
    if not gradient_checkpointing:
        tips.append("model.gradient_checkpointing=true")
    if micro_batch_size > 1:
        tips.append(
            f"train.micro_batch_size={micro_batch_size // 2} train.grad_accum={grad_accum * 2} "
            "(same global batch)"
        )
    tips.append(
        f"{'collator.pack_length' if collator == 'packing' else 'data.max_length'}={max(pack_length // 2, 1)}"
    )
    if zero_stage < 3:
        tips.append("distributed=zero3 (shards weights, gradients and optimizer state)")
    elif offload == "none":
        tips.append("distributed=zero3_offload (optimizer state in CPU memory)")
    memory = ""
    if cuda and torch.cuda.is_available():
        dev = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(dev)
        memory = (
            f"; cuda:{dev} {(total - free) / 2**30:.1f} of {total / 2**30:.1f} GiB in use, peak allocated "
            f"{torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB"
        )
    return (
        f"out of memory on rank {rank} at step {step}: micro-batch of {rows}, ZeRO stage {zero_stage}, offload "
        f"{offload}, gradient_checkpointing={str(gradient_checkpointing).lower()}{memory}; try "
        + ", or ".join(tips)
    )


def _test_faults() -> dict[tuple[int, int | None], str]:
    """Test-only fault injection: SFT_TEST_FAULT="nan@3,4;oom@2;stall@5:1" (kind@steps[:rank]).

    nan poisons the loss, oom raises torch.OutOfMemoryError, stall hangs the rank; the
    reliability tests use it to prove the NaN, OOM and process-group-timeout paths.
    """
    faults: dict[tuple[int, int | None], str] = {}
    for item in filter(None, os.environ.get("SFT_TEST_FAULT", "").split(";")):
        kind, _, where = item.partition("@")
        steps, _, rank = where.partition(":")
        for s in steps.split(","):
            faults[(int(s), int(rank) if rank else None)] = kind
    return faults


def _peak_memory_mb(cuda: bool) -> float:
    if cuda:
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resolved_yaml(cfg_dictconfig) -> str:
    return OmegaConf.to_yaml(cfg_dictconfig, resolve=True)
