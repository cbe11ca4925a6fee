"""A tiny randomly initialised causal LM and a byte-level tokenizer that need no download.

Used by tests and quick smoke runs (`model=tiny`). The tokenizer is byte-level BPE without merges:
every UTF-8 byte is one token, plus ChatML special tokens, so any text round-trips exactly and
offsets map tokens back to characters. The chat template is ChatML, the same shape as SmolLM2's.

Invariant: `build_tiny_model(arch, seed)` returns identical weights for identical arguments, and
`build_tiny_tokenizer()` is deterministic; both are built in well under a second.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from sft.choice import TinyArch
from sft.errors import UserError

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_ARCHS = tuple(TinyArch.values())  # the one list: sft.config.TinyArch


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: 256 byte tokens + 3 specials, ChatML chat template, pad = <|endoftext|>."""
    byte_vocab = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_vocab))}
    for tok in SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )
    return tok


def build_tiny_model(
    arch: str = "llama",
    vocab_size: int = 259,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_position_embeddings: int = 8192,
    dropout: float = 0.0,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
) -> torch.nn.Module:
    """A 2-layer causal LM of family `arch` with random weights (seeded), grouped-query attention."""
    if arch not in TINY_ARCHS:
        raise UserError(
            f"model.arch={arch!r} is not a tiny architecture; choose one of {list(TINY_ARCHS)}"
        )
    config = AutoConfig.for_model(
        arch,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=max_position_embeddings,
        attention_dropout=dropout,
        tie_word_embeddings=False,
        use_cache=False,
        bos_token_id=257,
        eos_token_id=258,
        pad_token_id=256,
    )
    if arch in ("qwen2", "qwen3"):
        config.use_sliding_window = False
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    return model.to(dtype)
