"""`Choice`, the base of every config enum, and the enums of sft/config.py: one source per list.

A `Choice` member is a `str` (it compares equal to its value, serialises to JSON as its value)
and prints as its value, so f-strings and YAML show `bfd`, never `PackStrategy.bfd`. Hydra checks
an override against the members at composition time.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def values(cls) -> list[str]:
        return [m.value for m in cls]


class Dtype(Choice):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class TinyArch(Choice):
    llama = "llama"
    qwen2 = "qwen2"
    mistral = "mistral"
    qwen3 = "qwen3"


class Attention(Choice):
    auto = "auto"
    varlen = "varlen"
    sdpa = "sdpa"
    eager = "eager"
    flex_attention = "flex_attention"
    flash_attention_2 = "flash_attention_2"
    flash_attention_3 = "flash_attention_3"


class DataFormat(Choice):
    auto = "auto"
    messages = "messages"
    sharegpt = "sharegpt"
    alpaca = "alpaca"
    prompt_completion = "prompt_completion"


class Overlong(Choice):
    truncate = "truncate"
    drop = "drop"
    split = "split"


class TrainOn(Choice):
    assistant = "assistant"
    all = "all"
    last_assistant = "last_assistant"


class Turns(Choice):
    all = "all"
    single = "single"
    multi = "multi"


class Combine(Choice):
    none = "none"
    random = "random"
    same_tag = "same_tag"


class LrScaling(Choice):
    none = "none"
    linear = "linear"
    sqrt = "sqrt"


class BatchBy(Choice):
    rows = "rows"
    samples = "samples"
    tokens = "tokens"


class Schedule(Choice):
    cosine = "cosine"
    linear = "linear"
    constant = "constant"


class LossNormalization(Choice):
    token = "token"
    sample = "sample"
    micro_batch_mean = "micro_batch_mean"


class LossImpl(Choice):
    auto = "auto"
    full = "full"
    chunked = "chunked"
    liger = "liger"


class Engine(Choice):
    auto = "auto"
    single = "single"
    ddp = "ddp"
    zero3 = "zero3"
    zero3_offload = "zero3_offload"
    fsdp2 = "fsdp2"


class Backend(Choice):
    auto = "auto"
    gloo = "gloo"
    nccl = "nccl"
