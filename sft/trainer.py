"""The training recipe: build everything in `__init__`, `train()` schedules, `train_step()` trains.

One optimizer step (`train_step`), in order; the loss normalisation lives in one visible place:
  1. collate this rank's micro-batches of the step from the epoch plan (same plan on every rank)
  2. one all-reduce of [loss units, tokens, pads, samples, targets]: the step's global denominator
  3. forward/backward every micro-batch; loss = unit-loss sum * world * accum / global units, so
     after DDP's mean over ranks and Accelerate's division by `grad_accum` the gradient is exactly
     (sum of token losses of the step) / (supervised tokens of the step)
  4. clip; one all-reduce agrees on the loss, a stop request and which ranks saw a non-finite loss
  5. update, or skip it on every rank when the loss or gradient norm is not finite
  6. advance the learning-rate schedule
`train()` then logs, evaluates, checkpoints and honours a pre-emption request between steps.

Invariant: for the same samples in a step, the update is the same under padding, packing and
padding_free, for any micro-batch split or number of processes (tests/test_loss_equivalence.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import torch
from accelerate.utils import send_to_device

from sft import checkpoint as ckpt
from sft import run_dir, trackers
from sft.build import build_model, build_optimizer
from sft.config import JobConfig
from sft.data.dataset import prepare_data
from sft.engine import close_distributed, setup_engine
from sft.epochs import Epochs
from sft.evaluation import grouped_validation_loss
from sft.hooks import StepHooks
from sft.loss import count_units, loss_functions
from sft.memory_check import check_run_memory
from sft.models.build import load_tokenizer
from sft.outputs import export_hf, run_benchmarks
from sft.run_log import RunLog, StepCounts, StepResult, peak_memory_mb, preempted_line
from sft.schedule import scaled_optim
from sft.stop import EXIT_INTERRUPTED, StopRequest

log = logging.getLogger("sft")
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpoint saved after SIGTERM/SIGUSR1; requeue and rerun
EXIT_BAD_STEPS = 3
EXIT_OOM = 4
COUNTED = ("tokens", "pad_tokens", "samples", "targets")  # BatchMeta counts summed per step


class Recipe:
    def __init__(self, cfg: JobConfig, config_yaml: str, hooks: StepHooks | None = None) -> None:
        m, d, t = cfg.model, cfg.data, cfg.train
        self.cfg = cfg
        self.hooks = hooks or StepHooks()
        self.stop = StopRequest()  # first: a SIGTERM during setup is honoured at step 1
        self.run_dir = Path(cfg.run_dir)
        self.config_yaml = ckpt.redact_secrets(config_yaml)  # no token reaches config/checkpoints
        self.engine = eng = setup_engine(
            engine=cfg.distributed.name,
            expect_processes=cfg.distributed.expect_processes,
            zero_stage=cfg.distributed.zero_stage,
            backend=cfg.distributed.backend,
            timeout_minutes=cfg.distributed.timeout_minutes,
            grad_accum=t.grad_accum,
            micro_batch_size=t.micro_batch_size,
            max_grad_norm=t.max_grad_norm,
            dtype=m.dtype,
            seed=cfg.seed,
            tracking=trackers.accelerator_args(t.report_to, self.run_dir),
        )
        self.acc, self.rank, self.world = eng.accelerator, eng.rank, eng.world
        self.lock = run_dir.lock(self.run_dir, eng)  # one run per run_dir, released in close()
        self.config_yaml = run_dir.with_engine(self.config_yaml, eng.kind)  # what auto found
        self.batching = cfg.collator.build(d.max_length)
        self.attn = self.batching.attention(m.attn_implementation, eng.cuda)
        with self.acc.main_process_first():
            self.tokenizer = load_tokenizer(m)
        self.model = build_model(
            m, engine=eng, attn=self.attn, vocab_size=len(self.tokenizer), seed=cfg.seed
        )
        self.loss_impl, self.loss, self.eval_loss = loss_functions(  # train, and validation's
            cfg.loss.impl, cfg.loss.chunk_tokens, t.loss_normalization, self.model, eng.cuda
        )
        gb = getattr(self.batching, "group_by", "")  # collator.group_by: ids for the planner
        with self.acc.main_process_first():
            self.data = prepare_data(self.tokenizer, d, cfg.seed, progress=eng.main, group_by=gb)
        self.collate = self.batching.collator(self.tokenizer.pad_token_id, self.attn)
        check_run_memory(cfg, eng, self.batching, self.data, self.loss_impl)  # or refuse now
        self.epochs = Epochs.for_run(self.batching, self.data, t, self.world, cfg.seed)
        self.total_steps = self.epochs.total_steps
        self.optim = scaled_optim(  # optim.lr_scaling: the lr this run uses
            cfg.optim, t, self.epochs.samples_per_step(0), self.world, self.total_steps, eng.main
        )
        self.model, self.optimizer, self.scheduler = build_optimizer(
            self.model,
            self.optim,
            engine=eng,
            expected_engine=eng.kind,
            total_steps=self.total_steps,
        )
        self.ckpt_root = self.run_dir / "checkpoints"
        self.compat = run_dir.compat_record(
            world=self.world,
            engine=eng.name,
            micro_batch_size=t.micro_batch_size,
            grad_accum=t.grad_accum,
            batching=self.batching.describe(),
            model_name=m.name_or_path,
            model=self.acc.unwrap_model(self.model),
            pieces=self.data.train,
            n_tokens=len(self.data.tokens.ids),
            seed=cfg.seed,
            cfg=cfg,
        )
        if eng.main:
            run_dir.prepare(self.run_dir, self.config_yaml, self.data.report.to_dict())
        self.acc.wait_for_everyone()
        self.step, totals, self.config_changes = run_dir.resume(
            t.resume_from,
            self.run_dir,
            engine=eng,
            compat=self.compat,
            scheduler=self.scheduler,
            locate=self.epochs.locate,
            total_steps=self.total_steps,
            optim=self.optim,
            allow_changes=t.allow_config_change,
        )
        self.log = RunLog(
            self.run_dir,
            main=eng.main,
            rank=self.rank,
            total_steps=self.total_steps,
            start_step=self.step,
            totals=totals,
            log_every=t.log_every,
            track=trackers.start(self.acc, t.report_to, self.run_dir, self.config_yaml),
            progress=t.progress,
            record_samples=t.record_samples,
        )

    # ----------------------------------------------------------------------------- loop
    def train(self) -> int:
        t = self.cfg.train
        if t.eval_at_start and self.step == 0:
            self.evaluate()
        bad_in_row, exit_code = 0, 0
        self.model.train()
        while self.step < self.total_steps:
            t0 = time.perf_counter()
            epoch, idx = self.epochs.locate(self.step)
            plan = self.epochs.plan(epoch)
            r = self.train_step(plan.steps[idx])
            self.step += 1
            where = round(epoch + (idx + 1) / len(plan), 4)
            self.log.step(self.step, r, where, plan, seconds=time.perf_counter() - t0)
            bad_in_row = 0 if r.finite else bad_in_row + 1
            if not r.finite:
                self.log.bad_step(self.step, r, self._sample_ids(plan.steps[idx], r.bad_ranks))
            if t.eval_every and self.step % t.eval_every == 0:
                self.evaluate()
            if bad_in_row >= t.max_bad_steps:
                self.log.abort(self.step, bad_in_row, t.max_bad_steps, self.ckpt_root)
                exit_code = EXIT_BAD_STEPS
                break
            if r.stop:
                exit_code = self._preempted()
                break
            if t.save_every and self.step % t.save_every == 0 and self.step < self.total_steps:
                self.save()
        self.stop.ignore_further()  # the loop is over: exit with this run's code, not a kill
        if exit_code == 0:
            self.finish()
        self.log.write_summary(exit_code, self.summary_facts())
        self.log.close()
        return exit_code

    def train_step(self, step_plan) -> StepResult:
        """One optimizer step over this rank's micro-batches of `step_plan` (see the docstring)."""
        acc, t, norm = self.acc, self.cfg.train, self.cfg.train.loss_normalization
        n = self.step + 1
        # 1. collate
        mbs = [self.collate(rows, self.data.tokens) for rows in step_plan[self.rank]]
        if any(m.targets == 0 for _, m in mbs):  # the data pipeline guarantees it; never 0/0
            empty = [m.piece_ids for _, m in mbs if m.targets == 0]
            raise RuntimeError(f"step {n}: a micro-batch without any target (pieces {empty})")
        # 2. the step's global counts; the loss denominator is the global unit count
        units = sum(count_units(m.targets, len(m.piece_ids), norm) for _, m in mbs)
        local = [sum(getattr(m, k) for _, m in mbs) for k in COUNTED]
        g_units, tokens, pads, samples, targets = self.engine.all_reduce([units, *local])
        scale = self.world * t.grad_accum / g_units
        # 3. forward/backward; DDP syncs gradients on the last micro-batch only
        loss_local = torch.zeros((), dtype=torch.float64, device=acc.device)
        for i, (batch, _) in enumerate(mbs):
            last = i == len(mbs) - 1
            acc.sync_gradients = last
            with contextlib.nullcontext() if last else acc.no_sync(self.model), acc.autocast():
                self.hooks.micro_batch(n, self.rank)
                unit_sum, _ = self.loss(
                    self.model, send_to_device(batch, acc.device, non_blocking=True)
                )
                unit_sum = self.hooks.loss(n, self.rank, unit_sum)
                acc.backward(unit_sum * scale)
            loss_local += unit_sum.detach().double()
        # 4. clip; agree on the loss, a stop request and the ranks with a non-finite loss
        clip = t.max_grad_norm > 0
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm) if clip else 0.0
        self.hooks.after_backward(n, self.rank, self.stop)
        bad_local = not math.isfinite(float(loss_local))
        reduced = self.engine.all_reduce(
            [float(loss_local), float(self.stop.requested)]
            + [float(bad_local and r == self.rank) for r in range(self.world)]
        )
        loss = reduced[0] / g_units
        gnorm = float(grad_norm) if grad_norm is not None else float("nan")
        finite = math.isfinite(loss) and math.isfinite(gnorm)
        # 5. update (skipped on every rank when not finite: step, schedule and data still advance)
        if finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        # 6. schedule
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        return StepResult(
            loss=loss,
            grad_norm=gnorm,
            lr=lr,
            finite=finite,
            counts=StepCounts(int(samples), int(tokens), int(targets), int(pads)),
            bad_ranks=[r for r, v in enumerate(reduced[2:]) if v > 0] or list(range(self.world)),
            stop=reduced[1] > 0,
            pieces=[[int(p) for p in m.piece_ids] for _, m in mbs],
        )

    def _sample_ids(self, step_plan, ranks: list[int]) -> list[str]:
        """Where the samples of the given ranks in one step come from (file:line)."""
        pieces = sorted({p for r in ranks for mb in step_plan[r] for row in mb for _, _, p in row})
        return [self.data.tokens.row_ids[int(self.data.train[p, 0])] for p in pieces]

    def _preempted(self) -> int:
        self.save()
        code = EXIT_INTERRUPTED if self.stop.interrupted else EXIT_PREEMPTED
        if self.engine.main:
            print(preempted_line(self.step, code, self.stop.interrupted), flush=True)
        return code

    def evaluate(self) -> float | None:
        """The validation loss now (sft/evaluation.py), logged; None without validation pieces."""
        if len(self.data.val) == 0:
            return None
        d = self.data
        value, n, by = grouped_validation_loss(
            self.model,
            d.val,
            d.val_groups,
            d.val_group_names,
            lambda pieces: self.batching.eval_rows(pieces, d.tokens.targets),
            self.collate,
            d.tokens,
            micro_batch_size=self.cfg.train.eval_micro_batch_size,
            engine=self.engine,
            loss=self.eval_loss,
        )
        self.log.eval(self.step, value, n, by)
        return value

    # ----------------------------------------------------------------------------- outputs
    def save(self) -> None:
        done = self.step >= self.total_steps
        epoch, idx = self.epochs.locate(self.step) if not done else (-1, -1)
        state = {
            "step": self.step,
            "epoch": epoch,
            "step_in_epoch": idx,
            "seed": self.cfg.seed,
            "totals": self.log.totals,
            "scheduler": self.scheduler.state_dict(),
        }
        t = self.cfg.train
        hf = t.checkpoint_hf_model or bool(t.benchmark_tasks)
        path = ckpt.save_checkpoint(
            self.acc,
            self.ckpt_root,
            self.step,
            state,
            self.config_yaml,
            t.keep_last,
            compat=self.compat,
            extra=(lambda tmp: self.export_hf(tmp / "model")) if hf else None,
        )
        if t.benchmark_tasks and not done:  # the last one runs on final/
            run_benchmarks(self.acc, path, t.benchmark_tasks, t.benchmark_limit, self.step)

    def finish(self) -> None:
        """The end of a completed run: last checkpoint, final/ export, last evaluation, benchmarks."""
        t = self.cfg.train
        if t.save_every:
            self.save()
        self.export_hf(self.run_dir / "final")
        just_evaluated = bool(t.eval_every) and self.step % t.eval_every == 0
        if (t.eval_every or t.eval_at_start) and not just_evaluated:
            self.evaluate()
        if t.benchmark_tasks:
            run_benchmarks(self.acc, self.run_dir, t.benchmark_tasks, t.benchmark_limit, self.step)

    def export_hf(self, out: Path) -> None:
        export_hf(self.acc, self.model, self.tokenizer, out)

    def write_failure_summary(self, exit_code: int) -> None:
        """After a storage failure: free the half-written checkpoint, then try summary.json."""
        if self.engine.main:
            ckpt.remove_stale(self.ckpt_root)
            with contextlib.suppress(OSError):
                self.log.write_summary(exit_code, self.summary_facts())

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
        close_distributed(self.engine)

    def summary_facts(self) -> dict:
        c, plan0 = self.cfg, self.epochs.plan(0)
        b = self.batching.describe()
        return {
            "run_name": c.run_name or self.run_dir.name,
            "collator": b["collator"],
            "strategy": b["strategy"],
            "batching": b,
            "model": c.model.name_or_path,
            "attn_implementation": self.attn,
            "loss_impl": self.loss_impl,
            "steps": self.step,
            "epochs": round(self.step / max(len(plan0), 1), 4),
            "steps_per_epoch": len(plan0),
            "samples_per_step": round(self.epochs.samples_per_step(0), 3),
            "lr": self.optim.lr,
            "batch_by": self.cfg.train.batch_by,
            "world_size": self.world,
            "engine": self.engine.kind,
            "pack_efficiency": plan0.pack_efficiency,
            "peak_memory_mb": peak_memory_mb(self.engine.cuda),
            "dropped_tail_samples_per_epoch": plan0.dropped_tail,
            "dropped_fragments_per_epoch": plan0.dropped_fragments,
            "data": self.data.report.to_dict()["counts"],
            "config_changes_on_resume": self.config_changes,
        }
