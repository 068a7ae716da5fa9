"""Tiny random Hugging Face models for the merge tests: fine-tunes of a base (no downloads).

Parameters are drawn from N(0, scale²) (not the HF init, whose constant norms would make
magnitudes tie), so top-k selections are unambiguous.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from stages.testing.tiny_checkpoints import tiny_marian
from stages.testing.tiny_tokenizers import numbered_word_tokenizer

PathLike = Union[str, Path]


def _randomize(model: torch.nn.Module, seed: int, scale: float, like: Optional[torch.nn.Module]) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        params = dict(like.named_parameters()) if like is not None else {}
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * scale
            p.copy_(params[name] + noise if name in params else noise)


def llama(
    out_dir: PathLike, seed: int, *, vocab_size: int = 64, hidden: int = 16, layers: int = 3,
    tie: bool = False, finetune_of: Optional[torch.nn.Module] = None, scale: float = 1.0,
    dtype: torch.dtype = torch.float32, max_shard_size: Optional[str] = None, tokenizer: bool = True,
    intermediate: Optional[int] = None, heads: int = 2, kv_heads: int = 1,
) -> torch.nn.Module:
    """A tiny LlamaForCausalLM saved to out_dir; `finetune_of` adds N(0, scale²) to its weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=64, tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2,
                      pad_token_id=0)
    model = LlamaForCausalLM(cfg)
    _randomize(model, seed, scale, finetune_of)
    model.to(dtype)
    _save(model, out_dir, max_shard_size, tokenizer, vocab_size)
    return model


def marian(
    out_dir: PathLike, seed: int, *, vocab_size: int = 50, d_model: int = 16, layers: int = 2,
    finetune_of: Optional[torch.nn.Module] = None, scale: float = 1.0, tokenizer: bool = True,
) -> torch.nn.Module:
    """A tiny MarianMTModel (encoder-decoder, tied embeddings) saved to out_dir."""
    model = tiny_marian(numbered_word_tokenizer(vocab_size), seed=seed, d_model=d_model, layers=layers,
                        ffn=2 * d_model)
    _randomize(model, seed, scale, finetune_of)
    _save(model, out_dir, None, tokenizer, vocab_size)
    return model


def _save(model: torch.nn.Module, out_dir: PathLike, max_shard_size: Optional[str], tokenizer: bool,
          vocab_size: int) -> None:
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(str(out_dir), **kwargs)
    if tokenizer:
        numbered_word_tokenizer(vocab_size).save_pretrained(str(out_dir))
