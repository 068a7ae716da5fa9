"""A conditional masked language model (CMLM, Ghazvininejad et al. 2019) built from torch modules.

    encoder   transformer over the source (pre-norm, learned positions)
    length    mean-pooled encoder states -> logits over target lengths 0…max_target_length
    decoder   transformer over the target with NO causal mask: every target
              position sees every other one, [MASK] included, plus the source
    output    tied to the token embedding

The mask token is one extra embedding row (id = vocab_size), never predicted,
so any seq2seq tokenizer works unchanged. Saved as `cmlm_config.json` +
`model.safetensors` + the tokenizer's own files.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

CONFIG_FILE = "cmlm_config.json"
WEIGHTS_FILE = "model.safetensors"


class CMLMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(..., ge=1, description="the tokenizer's size; [MASK] is id vocab_size")
    d_model: int = 160
    layers: int = 3
    heads: int = 4
    ffn: int = 640
    dropout: float = 0.1
    max_source_positions: int = 64
    max_target_length: int = 48
    pad_token_id: int = 0

    @property
    def mask_token_id(self) -> int:
        return self.vocab_size


def _layer_kwargs(c: CMLMConfig) -> dict:
    return {"d_model": c.d_model, "nhead": c.heads, "dim_feedforward": c.ffn, "dropout": c.dropout,
            "activation": "gelu", "batch_first": True, "norm_first": True}


class CMLM(nn.Module):
    def __init__(self, config: CMLMConfig):
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab_size + 1, c.d_model, padding_idx=c.pad_token_id)
        self.source_positions = nn.Embedding(c.max_source_positions, c.d_model)
        self.target_positions = nn.Embedding(c.max_target_length, c.d_model)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**_layer_kwargs(c)), c.layers,
                                             norm=nn.LayerNorm(c.d_model), enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**_layer_kwargs(c)), c.layers,
                                             norm=nn.LayerNorm(c.d_model))
        self.length_head = nn.Linear(c.d_model, c.max_target_length + 1)
        self.scale = math.sqrt(c.d_model)
        nn.init.normal_(self.embed.weight, std=c.d_model ** -0.5)
        with torch.no_grad():
            self.embed.weight[c.pad_token_id].zero_()

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def encode(self, source_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(states [B, S, d], padding mask [B, S] with True at padding)."""
        pad = source_ids == self.config.pad_token_id
        pos = torch.arange(source_ids.shape[1], device=source_ids.device)
        x = self.embed(source_ids) * self.scale + self.source_positions(pos)
        return self.encoder(x, src_key_padding_mask=pad), pad

    def predict_length(self, states: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        keep = (~pad).unsqueeze(-1).to(states.dtype)
        pooled = (states * keep).sum(1) / keep.sum(1).clamp(min=1)
        return self.length_head(pooled)

    def decode(self, target_ids: torch.Tensor, states: torch.Tensor, source_pad: torch.Tensor) -> torch.Tensor:
        """Token logits [B, T, vocab] for every target position; no causal mask."""
        pad = target_ids == self.config.pad_token_id
        pos = torch.arange(target_ids.shape[1], device=target_ids.device)
        y = self.embed(target_ids) * self.scale + self.target_positions(pos)
        h = self.decoder(y, states, tgt_key_padding_mask=pad, memory_key_padding_mask=source_pad)
        return h @ self.embed.weight[: self.config.vocab_size].T

    def forward(self, source_ids: torch.Tensor, target_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states, pad = self.encode(source_ids)
        return self.decode(target_ids, states, pad), self.predict_length(states, pad)


def save_cmlm(model: CMLM, tokenizer, out_dir: str | Path) -> Path:
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(model.config.model_dump(), indent=2) + "\n")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS_FILE))
    tokenizer.save_pretrained(out)
    return out


def load_cmlm(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """(model in eval mode, tokenizer) from a folder written by `save_cmlm`."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{path} has no {CONFIG_FILE}: not a CMLM folder "
                                "(train one: cascade train cmlm --data PAIRS --model TOKENIZER_DIR --out DIR)")
    config = CMLMConfig(**json.loads((path / CONFIG_FILE).read_text()))
    model = CMLM(config)
    model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.to(device=device, dtype=dtype).eval(), tokenizer
