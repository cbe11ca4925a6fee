"""Load the model and tokenizer a run asks for, and pick an attention backend that isolates.

Invariant: the returned model has `config.use_cache == False` (a cache in training silently turns
off transformers' packed-sequence detection) and an attention implementation that can run here;
the batching choice (sft/batching/) says which backend isolates its rows.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from sft.errors import UserError
from sft.models.attention import register_varlen

if TYPE_CHECKING:
    from sft.config import ModelConfig

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_attn_implementation(
    requested: str, auto: str, cuda: bool, training: bool = True
) -> str:
    """The backend to use; refuses combinations that cannot run.

    `auto` is what the batching choice prefers when `requested` is "auto" (sft/batching/): sdpa
    for one sample per row, varlen for packed rows (flash_attention_2 instead when flash-attn is
    installed on CUDA).
    """
    if requested == "auto":
        has_flash = cuda and importlib.util.find_spec("flash_attn") is not None
        return "flash_attention_2" if auto == "varlen" and has_flash else auto
    if requested in ("flash_attention_2", "flash_attention_3"):
        if not cuda:
            raise UserError(
                f"model.attn_implementation={requested} needs a CUDA GPU; use varlen (per-sample attention) on CPU"
            )
        mod = "flash_attn" if requested == "flash_attention_2" else "flash_attn_interface"
        if importlib.util.find_spec(mod) is None:
            raise UserError(
                f"model.attn_implementation={requested} needs the '{mod}' package; "
                "install it (pip install sft[flash]) or use varlen, which needs no extra package"
            )
    if requested == "flex_attention" and training and not cuda:
        raise UserError(
            "model.attn_implementation=flex_attention has no backward on CPU; use varlen or sdpa"
        )
    return requested


def load_tokenizer(model: ModelConfig):
    """The model's tokenizer (pad = eos when it has none), with the chat template the run uses
    (`model.chat_template` when set). Every command that tokenizes calls this one function."""
    return _tokenizer(model.name_or_path, model.trust_remote_code, model.chat_template)


def _tokenizer(name_or_path: str, trust_remote_code: bool, chat_template: str | None):
    from transformers import AutoTokenizer

    if name_or_path == "tiny":
        from sft.models.tiny import build_tiny_tokenizer

        tok = build_tiny_tokenizer()
    else:
        path = _resolve_path(name_or_path)
        try:
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise UserError(
                f"cannot load a tokenizer from model.name_or_path={name_or_path} "
                f"({str(e).splitlines()[0]})"
            ) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if chat_template:
        tok.chat_template = _template_from(chat_template, trust_remote_code)
    if not tok.chat_template:
        raise UserError(
            f"the tokenizer of {name_or_path} has no chat template; set model.chat_template to a "
            ".jinja file or to an instruct model whose template to use (e.g. its -Instruct sibling)"
        )
    return tok


def _template_from(spec: str, trust_remote_code: bool) -> str:
    p = Path(spec).expanduser()
    if p.is_file():
        return p.read_text()
    from transformers import AutoTokenizer

    try:
        template = AutoTokenizer.from_pretrained(
            _resolve_path(spec), trust_remote_code=trust_remote_code
        ).chat_template
    except (OSError, ValueError) as e:
        raise UserError(
            f"model.chat_template={spec}: neither a file nor a loadable tokenizer ({str(e).splitlines()[0]})"
        ) from None
    if not template:
        raise UserError(f"model.chat_template={spec}: that tokenizer has no chat template either")
    return template


def _resolve_path(name_or_path: str) -> str:
    if name_or_path == "smollm2":
        from sft.models.smollm2 import ensure_smollm2

        return str(ensure_smollm2())
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise UserError(
                f"model.name_or_path={name_or_path} exists but holds no config.json (not an HF model folder)"
            )
        return str(p)
    if name_or_path.startswith((".", "/", "~")):
        raise UserError(f"model.name_or_path={name_or_path} does not exist")
    return name_or_path  # a hub id


def load_model(
    name_or_path: str,
    *,
    arch: str = "llama",
    dtype: str = "fp32",
    attn_implementation: str = "sdpa",
    gradient_checkpointing: bool = False,
    trust_remote_code: bool = False,
    dropout: float | None = None,
    vocab_size: int | None = None,
    seed: int = 0,
    tiny_hidden_size: int = 64,
    tiny_layers: int = 2,
) -> torch.nn.Module:
    """A causal LM ready for training (use_cache off, chosen attention)."""
    register_varlen()
    torch_dtype = DTYPES[dtype]
    if name_or_path == "tiny":
        from sft.models.tiny import build_tiny_model

        model = build_tiny_model(
            arch,
            vocab_size=vocab_size or 259,
            hidden_size=tiny_hidden_size,
            num_layers=tiny_layers,
            dropout=dropout or 0.0,
            seed=seed,
            attn_implementation=attn_implementation,
            dtype=torch_dtype,
        )
    else:
        from transformers import AutoModelForCausalLM

        path = _resolve_path(name_or_path)
        extra = {"attention_dropout": dropout} if dropout is not None else {}
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path,
                dtype=torch_dtype,
                attn_implementation=attn_implementation,
                trust_remote_code=trust_remote_code,
                use_safetensors=None,
                **extra,
            )
        except (OSError, ValueError) as e:
            raise UserError(
                f"cannot load model.name_or_path={name_or_path} ({str(e).splitlines()[0]})"
            ) from None
    model.config.use_cache = False
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.use_cache = True  # generation after training may use a cache
    if gradient_checkpointing:  # transformers >= 5.2x renamed it (the old name warns)
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


def apply_lora(
    model: torch.nn.Module, r: int, alpha: int, dropout: float, target_modules: list[str]
) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, cfg)
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    return model
