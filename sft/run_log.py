"""`RunLog`: everything a run records about itself, in one object that keeps what it needs in memory.

    metrics.jsonl     one line per logged step and per evaluation (rank 0; sft/metrics.py),
                      each also sent to the experiment trackers (sft/trackers.py)
    samples/rankR.jsonl  the pieces of every step of rank R (train.record_samples)
    totals            samples, tokens, targets, pads, skipped steps, train seconds, last loss:
                      saved in every checkpoint and restored on resume
    summary.json      written once at the end, on every exit path (rank 0)

Invariant: after a resume, metrics.jsonl and the samples ledger hold exactly one line per step
(the trainer truncates them to the checkpoint's step before a RunLog opens them).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sft.checkpoint import latest_checkpoint, redact_secrets
from sft.metrics import MetricsWriter

log = logging.getLogger("sft")
FRESH_TOTALS = {
    "samples": 0,
    "tokens": 0,
    "supervised_tokens": 0,
    "pad_tokens": 0,
    "skipped_steps": 0,
    "train_s": 0.0,
}


@dataclass(frozen=True)
class StepCounts:
    """The global counts of one optimizer step (summed over micro-batches and ranks)."""

    samples: int
    tokens: int
    targets: int
    pads: int


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step did (returned by Recipe.train_step)."""

    loss: float
    grad_norm: float
    lr: float
    finite: bool
    counts: StepCounts
    bad_ranks: list[int]
    stop: bool  # some rank was asked to stop (SIGTERM/SIGUSR1)
    pieces: list[list[int]]  # piece ids of each micro-batch of this rank


def peak_memory_mb(cuda: bool) -> float:
    """Peak GPU memory allocated (CUDA), else the process's peak resident set size, in MiB."""
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def preempted_line(step: int, code: int, interrupted: bool) -> str:
    """What a run stopped by a signal prints once its checkpoint is saved."""
    return (
        f"[sft] {'interrupted' if interrupted else 'pre-empted'}: checkpoint step-{step} saved; "
        f"exit {code} (rerun the same command, with the same run_dir, to resume)"
    )


def closing_line(summary: dict, run_dir: Path) -> str:
    """The run's last line: where it is, how far it got, its losses and wall time."""
    loss, ev = summary.get("final_loss"), summary.get("final_eval_loss")
    losses = f"final loss {loss:.4f}" if isinstance(loss, float) else "no step trained"
    losses += f", eval loss {ev:.4f}" if isinstance(ev, float) else ""
    return (
        f"[sft] {'done' if summary['exit_code'] == 0 else 'stopped'}: {summary.get('steps', 0)} "
        f"steps, {losses}, {summary['wall_s']:.1f} s training, "
        f"{summary['tokens_per_s']:,.0f} tokens/s; exit {summary['exit_code']}; "
        f"outputs in {run_dir}"
    )


class RunLog:
    def __init__(
        self,
        run_dir: Path,
        *,
        main: bool,
        rank: int,
        total_steps: int,
        start_step: int,
        totals: dict | None,
        log_every: int,
        track: Callable[[dict], None] | None,
        progress: bool,
        record_samples: bool,
    ) -> None:
        self.run_dir = run_dir
        self.main = main
        self.rank = rank
        self.total_steps = total_steps
        self.totals = {**FRESH_TOTALS, **(totals or {})}
        self.log_every = log_every
        self.record_samples = record_samples
        self.last_eval: float | None = None
        self.last_eval_by: dict | None = None
        self._bad: tuple[list[int], list[str]] = ([], [])  # the last skipped step's ranks, samples
        self.metrics = MetricsWriter(run_dir, main, track, total_steps, progress, start_step)

    def step(self, step: int, r: StepResult, epoch: float, plan, seconds: float) -> None:
        """Account one optimizer step; log it every `log_every` steps, at the end and when skipped."""
        tt, counts, finite = self.totals, r.counts, r.finite
        tt["samples"] += counts.samples
        tt["tokens"] += counts.tokens
        tt["supervised_tokens"] += counts.targets
        tt["pad_tokens"] += counts.pads
        tt["train_s"] += seconds
        tt["skipped_steps"] += 0 if finite else 1
        tt["last_loss"] = r.loss
        if step % self.log_every == 0 or step == self.total_steps or not finite:
            row = {
                "step": step,
                "epoch": epoch,
                "loss": r.loss,
                "lr": r.lr,
                "grad_norm": r.grad_norm,
                "samples": counts.samples,
                "tokens": counts.tokens,
                "supervised_tokens": counts.targets,
                "pad_tokens": counts.pads,
                "tokens_per_s": counts.tokens / seconds,
                "samples_per_s": counts.samples / seconds,
                "elapsed_s": tt["train_s"],
                "total_tokens": tt["tokens"],
                "total_supervised_tokens": tt["supervised_tokens"],
                "total_samples": tt["samples"],
                "steps_per_epoch": len(plan),
            }
            if plan.pack_efficiency is not None:
                row["pack_efficiency"] = plan.pack_efficiency
            if not finite:
                row["skipped"] = True
            self.metrics.log(row)
        if self.record_samples:
            d = self.run_dir / "samples"
            d.mkdir(parents=True, exist_ok=True)
            with open(d / f"rank{self.rank}.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "pieces": r.pieces}) + "\n")

    def bad_step(self, step: int, r: StepResult, sample_ids: list[str]) -> None:
        """A skipped step: the ranks with a non-finite loss and where their samples come from."""
        self._bad = (r.bad_ranks, sample_ids)
        log.error(
            "step %d: non-finite loss=%s grad_norm=%s (ranks %s); update skipped; samples %s",
            step,
            r.loss,
            r.grad_norm,
            r.bad_ranks,
            sample_ids[:8],
        )

    def abort(self, step: int, bad_in_row: int, limit: int, ckpt_root: Path) -> None:
        """The one error line of a run stopped by `limit` non-finite steps in a row (rank 0)."""
        if self.main:
            ranks, ids = self._bad
            last = latest_checkpoint(ckpt_root)
            print(
                f"error: aborting at step {step}: {bad_in_row} non-finite steps in a row "
                f"(train.max_bad_steps={limit}); non-finite loss on rank(s) {ranks}, samples "
                f"{ids[:8]}; last good checkpoint: {last if last else 'none'} (intact)",
                file=sys.stderr,
                flush=True,
            )

    def eval(self, step: int, loss: float, tokens: int, by: dict | None = None) -> None:
        """An evaluation's line; `by`: the loss per data.eval_by value (`eval_loss_by`)."""
        self.last_eval, self.last_eval_by = loss, by or None
        row = {"step": step, "eval_loss": loss, "eval_tokens": tokens}
        self.metrics.log(row | ({"eval_loss_by": by} if by else {}))

    def write_summary(self, exit_code: int, facts: dict) -> None:
        """summary.json: the run's facts (from the trainer) and totals (rank 0)."""
        if not self.main:
            return
        tt = self.totals
        padded = tt["tokens"] + tt["pad_tokens"]
        summary = {
            **facts,
            "wall_s": tt["train_s"],
            "train_tokens": tt["tokens"],
            "supervised_tokens": tt["supervised_tokens"],
            "pad_tokens": tt["pad_tokens"],
            "samples": tt["samples"],
            "padding_ratio": padded / max(tt["tokens"], 1),
            "tokens_per_s": tt["tokens"] / max(tt["train_s"], 1e-9),
            "samples_per_s": tt["samples"] / max(tt["train_s"], 1e-9),
            "final_loss": tt.get("last_loss"),
            "final_eval_loss": self.last_eval,
            **({"final_eval_loss_by": self.last_eval_by} if self.last_eval_by else {}),
            "skipped_steps": tt["skipped_steps"],
            "exit_code": exit_code,
        }
        text = redact_secrets(json.dumps(summary, indent=2))
        (self.run_dir / "summary.json").write_text(text)
        print(closing_line(summary, self.run_dir), flush=True)

    def close(self) -> None:
        self.metrics.close()
