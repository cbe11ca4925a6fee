"""`sft-plan`: per-GPU memory and optimizer steps per epoch of a run, before it is launched.

    sft-plan experiment=paper_llama3_8b --no-data              # memory only (shapes built in)
    sft-plan experiment=paper_llama3_8b data.path=/data/tulu.jsonl --tokenizer /models/llama3
    sft-plan model=smollm2_135m data=lima collator=packing --gpus 8 --zero-stage 2

Memory per GPU, by component (bytes per parameter P, N GPUs, ZeRO stage z; the ZeRO paper's
accounting). Mixed precision under DeepSpeed keeps bf16 weights and grads plus fp32 master
weights and AdamW m, v: 2 + 2 + 12 = 16 B/param. FSDP2 (Accelerate upcasts to fp32): 4 + 4 + 8.
Without either (single/ddp) `model.dtype=bf16` keeps fp32 master weights and autocasts
(sft/build.py): 4 + 4 + 8, as fp32. Stage >= 1 splits optimizer states N ways, >= 2 also grads, 3 also
weights; offload moves optimizer states (+ fp32 grad partitions) and/or weight shards to CPU RAM.
ZeRO-3 and FSDP2 also hold one gathered unit (the larger of one decoder layer and the embedding)
with its full gradient. Activations per decoder layer and token, Llama-style block (GQA, SwiGLU,
attention kernels that keep no L x L scores), counted from what autograd saves in transformers'
Llama layer: 6h + 3q + 2kv + 4i values (h hidden, q/kv the query/key-value widths, i the MLP
width), in bytes by precision (`activation_bytes_per_token_layer`), plus one more layer's set
for the layer in backward; with gradient checkpointing only each layer's input (h) plus the
recomputed layer's set and its gradients. Logits exist only at supervised positions (the loss
uses `logits_to_keep`): tokens x supervised fraction x vocab x 12 B for loss.impl=full (fp32
log-softmax, its gradient, the logits' gradient); chunked holds one chunk of them plus the head's
weight gradient.
Not counted: CUDA context and allocator slack (~1-3 GiB), communication buckets.

The micro-batch shape: padding = micro_batch_size rows x the longest sample; packing =
micro_batch_size rows x pack_length. Steps per epoch come from the trainer's own epoch plan
(each batching choice's `plan`, sft/batching/; sft/plan_steps.py) over the dataset's real token lengths, for
padding and every packing strategy. The command itself is sft/plan_cli.py. Time per epoch: 6 x params x computed tokens (pads included) + causal attention
6 x layers x q x sum(len^2), at `--mfu` of `--peak-tflops` per GPU: an order of magnitude, not a
benchmark.

Invariant: every number printed comes from the functions below (pure arithmetic over a
`ModelShape`, a `MemorySetup` and token lengths); tests check them against hand-computed values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sft.errors import UserError

GIB = 2**30


# ----------------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a Llama-style decoder that memory and compute depend on."""

    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_embeddings: bool
    qkv_bias: bool = False  # Qwen2
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False  # Qwen3: RMSNorm over each head's q and k

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def layer_params(self) -> int:
        h = self.hidden_size
        i = self.intermediate_size
        attn = h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h
        attn += (
            (self.q_dim + 2 * self.kv_dim) * self.qkv_bias
            + h * self.o_bias
            + 2 * self.head_dim * self.qk_norm
        )
        return attn + 3 * h * i + (2 * i + h) * self.mlp_bias + 2 * h  # + two RMSNorm weights

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def lm_head_size(self) -> int:
        """Values of the LM head's weight (tied or not)."""
        return self.vocab_size * self.hidden_size

    def lm_head_params(self) -> int:
        return 0 if self.tie_embeddings else self.vocab_size * self.hidden_size

    def num_params(self) -> int:
        return (
            self.num_layers * self.layer_params()
            + self.embedding_params()
            + self.lm_head_params()
            + self.hidden_size
        )  # final norm


def _llama3(name: str, h: int, i: int, layers: int, heads: int) -> ModelShape:
    return ModelShape(name, 128256, h, i, layers, heads, 8, 128, False)


SMOLLM2_135M = ModelShape("HuggingFaceTB/SmolLM2-135M", 49152, 576, 1536, 30, 9, 3, 64, True)
LLAMA3_8B = _llama3("meta-llama/Meta-Llama-3-8B", 4096, 14336, 32, 32)
LLAMA3_70B = _llama3("meta-llama/Meta-Llama-3-70B", 8192, 28672, 80, 64)
# names (lower case, without the organisation) whose shapes are built in: planning works offline
KNOWN_SHAPES = {
    "meta-llama-3-8b": LLAMA3_8B,
    "meta-llama-3-8b-instruct": LLAMA3_8B,
    "llama-3.1-8b": LLAMA3_8B,
    "llama-3.1-8b-instruct": LLAMA3_8B,
    "meta-llama-3.1-8b": LLAMA3_8B,
    "meta-llama-3.1-8b-instruct": LLAMA3_8B,
    "meta-llama-3-70b": LLAMA3_70B,
    "meta-llama-3-70b-instruct": LLAMA3_70B,
    "llama-3.1-70b": LLAMA3_70B,
    "llama-3.1-70b-instruct": LLAMA3_70B,
    "meta-llama-3.1-70b": LLAMA3_70B,
    "meta-llama-3.1-70b-instruct": LLAMA3_70B,
    "smollm2-135m": SMOLLM2_135M,
    "smollm2-135m-instruct": SMOLLM2_135M,
    "smollm2": SMOLLM2_135M,
}


def shape_from_hf_config(cfg, name: str) -> ModelShape:
    """A ModelShape from a transformers config (Llama, Qwen2/3, Mistral and alike)."""
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    attention_bias = getattr(
        cfg, "attention_bias", None
    )  # Llama/Qwen3: q, k, v and o; Qwen2: q, k, v always
    qkv_bias = cfg.model_type == "qwen2" if attention_bias is None else bool(attention_bias)
    return ModelShape(
        name,
        cfg.vocab_size,
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_hidden_layers,
        heads,
        getattr(cfg, "num_key_value_heads", None) or heads,
        head_dim,
        bool(getattr(cfg, "tie_word_embeddings", False)),
        qkv_bias=qkv_bias,
        o_bias=bool(attention_bias),
        mlp_bias=bool(getattr(cfg, "mlp_bias", False)),
        qk_norm=cfg.model_type == "qwen3",
    )


def resolve_shape(
    name_or_path: str, tiny_hidden_size: int = 64, tiny_layers: int = 2, tiny_vocab_size: int = 0
) -> ModelShape:
    """Built-in shapes for known names, the config of a local folder, else the HF cache (offline)."""
    if name_or_path == "tiny":
        h = tiny_hidden_size
        vocab = max(259, tiny_vocab_size)
        return ModelShape("tiny", vocab, h, 2 * h, tiny_layers, 4, 2, h // 4, False)
    key = name_or_path.rstrip("/").split("/")[-1].lower()
    if key in KNOWN_SHAPES and not Path(name_or_path).expanduser().is_dir():
        return KNOWN_SHAPES[key]
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(
            str(Path(name_or_path).expanduser())
            if Path(name_or_path).expanduser().is_dir()
            else name_or_path
        )
    except (OSError, ValueError) as e:
        raise UserError(
            f"no shape for model.name_or_path={name_or_path} ({str(e).splitlines()[0][:120]}); "
            f"use a local model folder or one of the built-in names: {sorted(KNOWN_SHAPES)}"
        ) from None
    return shape_from_hf_config(cfg, name_or_path)


# ----------------------------------------------------------------------------------- memory
@dataclass(frozen=True)
class MemorySetup:
    """How the run holds its state. engine: deepspeed | fsdp2 | plain (single/ddp)."""

    gpus: int
    zero_stage: int
    engine: str
    dtype: str  # bf16 | fp16 | fp32
    offload_optimizer: bool = False
    offload_params: bool = False

    def __post_init__(self) -> None:
        if self.gpus < 1:
            raise UserError(f"--gpus must be >= 1, got {self.gpus}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise UserError(f"--zero-stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.offload_params and self.zero_stage != 3:
            raise UserError(
                "parameter offload needs ZeRO stage 3 (DeepSpeed offload_param); use --offload optimizer"
            )
        if self.offload_optimizer and self.zero_stage == 0:
            raise UserError("optimizer offload needs ZeRO stage >= 1 (DeepSpeed offload_optimizer)")


def bytes_per_param(engine: str, dtype: str) -> tuple[int, int, int]:
    """(weights, grads, optimizer states) bytes per parameter for this engine and precision."""
    if dtype == "fp32":
        return 4, 4, 8
    if engine == "deepspeed":
        return 2, 2, 12  # bf16 weights and grads; fp32 master + AdamW m, v
    if engine == "fsdp2":
        return 4, 4, 8  # Accelerate upcasts sharded weights to fp32, computes in bf16
    return 4, 4, 8  # fp32 master weights under bf16 autocast (sft/build.py)


@dataclass(frozen=True)
class StateMemory:
    """Bytes per GPU (and per GPU's share of CPU RAM) for weights, grads and optimizer states."""

    weights: float
    grads: float
    optimizer: float
    gathered: float  # ZeRO-3 / FSDP2: one full unit (weights + grads) materialised at a time
    cpu: float

    @property
    def gpu_total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.gathered


def state_memory(shape: ModelShape, s: MemorySetup) -> StateMemory:
    p = shape.num_params()
    wb, gb, ob = bytes_per_param(s.engine, s.dtype)
    weights = p * wb / (s.gpus if s.zero_stage >= 3 else 1)
    grads = p * gb / (s.gpus if s.zero_stage >= 2 else 1)
    optimizer = p * ob / (s.gpus if s.zero_stage >= 1 else 1)
    cpu = 0.0
    if s.offload_optimizer:
        cpu += optimizer + p * 4 / s.gpus  # fp32 grad partitions are copied to CPU for the CPU step
        optimizer = 0.0
        grads = 0.0
    if s.offload_params:
        cpu += weights
        weights = 0.0
    gathered = 0.0
    if s.zero_stage >= 3:
        unit = max(shape.layer_params(), shape.embedding_params(), shape.lm_head_params())
        compute_bytes = 2 if s.dtype != "fp32" else 4
        gathered = (
            unit * 2 * compute_bytes
        )  # gathered weights and their full gradient before reduce-scatter
    return StateMemory(weights, grads, optimizer, gathered, cpu)


def activation_values_per_token_layer(shape: ModelShape) -> int:
    """Values one decoder layer saves for backward per token (no gradient checkpointing).

    Counted from what autograd saves in transformers' Llama-style decoder layer (a
    `saved_tensors_hooks` census, tests/distributed/test_plan_memory.py): each RMSNorm keeps its
    input, its normalised input and its output (3h, twice); attention keeps the rotated queries,
    the attention output and the output projection's input (3q) and the rotated keys and the
    values (2kv); the SwiGLU MLP keeps gate, SiLU(gate), up and their product (4i)."""
    return 6 * shape.hidden_size + 3 * shape.q_dim + 2 * shape.kv_dim + 4 * shape.intermediate_size


def compute_precision(engine: str, dtype: str) -> str:
    """How a step computes: fp32; autocast (fp32 weights, bf16/fp16 matmuls: the plain engine,
    sft/build.py); half (weights in bf16/fp16: DeepSpeed, FSDP2's mixed-precision policy)."""
    if dtype == "fp32":
        return "fp32"
    return "autocast" if engine == "plain" else "half"


def activation_bytes_per_token_layer(shape: ModelShape, precision: str) -> int:
    """Bytes of `activation_values_per_token_layer` by precision (the same census):
    fp32 all 4 B; half keeps the two norms' fp32 normalised inputs (2h x 4 B) and the rest in
    2 B; autocast keeps the residual stream's norms in fp32 (4h x 4 B) and bf16 copies of every
    linear layer's input beside bf16 outputs (4h + 4q + 2kv + 4i x 2 B)."""
    h, q, kv, i = shape.hidden_size, shape.q_dim, shape.kv_dim, shape.intermediate_size
    if precision == "fp32":
        return 4 * activation_values_per_token_layer(shape)
    if precision == "half":
        return 4 * 2 * h + 2 * (4 * h + 3 * q + 2 * kv + 4 * i)
    return 4 * 4 * h + 2 * (4 * h + 4 * q + 2 * kv + 4 * i)


def activation_memory(
    shape: ModelShape,
    rows: int,
    row_length: int,
    dtype: str,
    checkpointing: bool,
    engine: str = "deepspeed",
) -> float:
    """Bytes of saved activations of the decoder layers for one micro-batch of rows x row_length,
    plus the layer in backward: its activation gradients, about one layer's saved set (two with
    checkpointing: the recomputed set and its gradients). Under autocast, the bf16 copies of the
    weights that the forward casts are saved too (every layer's, or one layer's under
    checkpointing, and the output head's)."""
    tokens = rows * row_length
    precision = compute_precision(engine, dtype)
    per_layer = activation_bytes_per_token_layer(shape, precision) * tokens
    casts = 0.0
    if precision == "autocast":
        layers_cast = 1 if checkpointing else shape.num_layers
        casts = 2.0 * (layers_cast * shape.layer_params() + shape.lm_head_size())
    if checkpointing:
        residual = 2 if precision == "half" else 4
        return shape.num_layers * shape.hidden_size * tokens * residual + 2 * per_layer + casts
    return (shape.num_layers + 1) * per_layer + casts


def logits_memory(
    shape: ModelShape,
    rows: int,
    row_length: int,
    dtype: str,
    supervised_fraction: float,
    impl: str = "full",
    chunk_tokens: int = 512,
) -> float:
    """Bytes the loss needs beyond the weights' own gradients (sft/loss.py), by `impl`:

    full:    the logits at supervised positions: at the start of backward the fp32 log-softmax
             cross-entropy saved, its gradient and the logits' gradient, 12 B per value in any
             precision (measured: 11.9-12.0 B for fp32 and bf16 heads).
    chunked: one chunk of logits, 8 B per value in any precision (the fp32 logits and the
             temporary of their log-sum-exp; a bf16 head's own output and the bf16 gradient
             exist only beside one of them), plus the LM head's weight gradient made in forward
             and held until backward.
    auto:    the smaller of the two (the loss picks per micro-batch, sft/loss.py `cheaper_impl`).
    """
    kept = rows * row_length * supervised_fraction
    if impl == "auto":  # sft/loss.py takes the cheaper of the two per micro-batch
        both = (
            logits_memory(shape, rows, row_length, dtype, supervised_fraction, i, chunk_tokens)
            for i in ("full", "chunked")
        )
        return min(both)
    if impl in ("chunked", "liger"):
        b = 2 if dtype != "fp32" else 4
        return min(kept, chunk_tokens) * shape.vocab_size * 8 + shape.lm_head_size() * b
    return kept * shape.vocab_size * 12


def grads_at_peak(setup: MemorySetup, grad_accum: int) -> bool:
    """Whether a step's gradients exist at its peak (the loss: end of forward, start of
    backward). Not on one process without accumulation: the trainer's zero_grad(set_to_none)
    frees them after every optimizer step and backward makes them only after the loss (measured:
    the tiny128k full-loss rows of bench_memory.py were over by the 260 MiB of gradients). DDP's
    buckets, DeepSpeed's and FSDP2's flat buffers and accumulated gradients hold them throughout."""
    return not (setup.engine == "plain" and setup.gpus == 1 and grad_accum == 1)


def step_total(state: StateMemory, act: float, loss: float, grads_live: bool) -> float:
    """Bytes per GPU at a step's peak: the states with the activations and the loss; without
    live gradients (`grads_at_peak`), the larger of the loss peak and backward's end (all the
    gradients made, the activations freed)."""
    if grads_live:
        return state.gpu_total + act + loss
    return state.gpu_total - state.grads + max(act + loss, state.grads)


def peak_memory(
    shape: ModelShape,
    setup: MemorySetup,
    *,
    rows: int,
    row_length: int,
    checkpointing: bool,
    supervised_fraction: float,
    loss_impl: str = "full",
    chunk_tokens: int = 512,
    grad_accum: int = 1,
) -> float:
    """Bytes per GPU at the peak of a step on micro-batches of rows x row_length: the states on the
    device, the activations and the loss (what `sft-plan` prints as the total)."""
    act = activation_memory(shape, rows, row_length, setup.dtype, checkpointing, setup.engine)
    loss = logits_memory(
        shape, rows, row_length, setup.dtype, supervised_fraction, loss_impl, chunk_tokens
    )
    live = grads_at_peak(setup, grad_accum)
    return step_total(state_memory(shape, setup), act, loss, live)
