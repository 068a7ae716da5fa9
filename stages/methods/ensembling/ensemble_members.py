"""Ensemble members: a (model, tokenizer) pair, loadable from a local directory.

A member is either a seq2seq model (AutoModelForSeq2SeqLM, e.g. Marian: the
source text goes to the encoder) or a causal LM (AutoModelForCausalLM, e.g.
GPT-2 / Llama: `prompt_template.format(text=source)` is the left-padded
prompt). Members may live on different devices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from pydantic import BaseModel, ConfigDict
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from stages.runtime.hf_loading import load_pretrained


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Member:
    model: Any  # a transformers PreTrainedModel with an LM head
    tokenizer: Any  # a transformers tokenizer
    name: str = "member"
    prompt_template: str = "{text}"  # causal LMs only
    max_source_length: int | None = None  # truncate sources for the encoder / prompt
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def is_encoder_decoder(self) -> bool:
        return bool(self.model.config.is_encoder_decoder)

    def encode_sources(self, sources: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise a batch: right padding for an encoder, left padding for a causal prompt."""
        truncation = self.max_source_length is not None
        if self.is_encoder_decoder:
            batch = self.tokenizer(list(sources), padding=True, truncation=truncation,
                                   max_length=self.max_source_length, return_tensors="pt")
        else:
            prompts = [self.prompt_template.format(text=s) for s in sources]
            batch = self.tokenizer(prompts, padding=True, truncation=truncation, max_length=self.max_source_length,
                                   padding_side="left", return_tensors="pt")
            if batch["input_ids"].shape[1] == 0 or (batch["attention_mask"].sum(dim=1) == 0).any():
                raise ValueError(f"member {self.name!r}: an empty prompt; put a BOS token into prompt_template")
        return {key: batch[key].to(self.device) for key in ("input_ids", "attention_mask")}


class MemberSpec(BaseModel):
    """Where to load a member from, and how it enters the ensemble."""

    model_config = ConfigDict(extra="forbid")

    path: str
    weight: float = 1.0
    device: str | None = None  # None: cuda if available, else cpu
    dtype: str | None = None  # e.g. "float16"; None: as saved
    name: str | None = None
    prompt_template: str = "{text}"


def load_member(path: str | Path, device: str | torch.device | None = None, dtype: str | None = None,
                name: str | None = None, prompt_template: str = "{text}") -> Member:
    """Load a member saved with `save_pretrained` (model + tokenizer in one local dir)."""
    path = str(path)
    config = AutoConfig.from_pretrained(path)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    model = load_pretrained(auto.__name__, path, **kwargs).to(device or default_device()).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return Member(model=model, tokenizer=tokenizer, name=name or Path(path).name, prompt_template=prompt_template)


def load_members(specs: Sequence[MemberSpec]) -> list[Member]:
    return [load_member(s.path, s.device, s.dtype, s.name, s.prompt_template) for s in specs]


def check_shared_vocabulary(members: Sequence[Member]) -> None:
    """Token-level ensembling adds up distributions id by id: the ids must mean the same tokens."""
    reference = members[0].tokenizer.get_vocab()
    for member in members[1:]:
        if member.tokenizer.get_vocab() != reference:
            raise ValueError(
                f"members {members[0].name!r} and {member.name!r} have different vocabularies; token-level "
                "ensembling needs a shared one (use stages.methods.ensembling.union_vocab for different tokenizers)"
            )
