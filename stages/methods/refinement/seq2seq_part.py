"""A seq2seq model (Marian, ...) as a refinement part: decode with beams or seeded sampling, and score."""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field


class Seq2SeqOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="hub id or local dir; None = the stage's `model`")
    revision: str | None = None
    num_beams: int = Field(4, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(128, ge=1)
    batch_size: int = Field(32, ge=1)


class Seq2Seq:
    def __init__(self, model, tokenizer, options: Seq2SeqOptions):
        self.model, self.tok, self.options = model, tokenizer, options

    def _max_new(self) -> int:
        limit = getattr(self.model.config, "max_position_embeddings", None) or 1_000_000
        return min(self.options.max_new_tokens, limit - 1)

    @torch.no_grad()
    def decode(self, texts: list[str], seed: int | None = None, num_beams: int | None = None) -> list[str]:
        """Translate `texts`; an empty text gives an empty output. `seed` matters only when sampling."""
        o = self.options
        out = [""] * len(texts)
        todo = [i for i, t in enumerate(texts) if t.strip()]
        sampling = {"do_sample": True, "temperature": o.temperature, "top_k": o.top_k, "top_p": o.top_p} \
            if o.do_sample else {"do_sample": False}
        for b in range(0, len(todo), o.batch_size):
            idx = todo[b:b + o.batch_size]
            enc = self.tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                           max_length=self._max_new() + 1).to(self.model.device)
            if o.do_sample and seed is not None:
                torch.manual_seed(seed)
            gen = self.model.generate(**enc, num_beams=num_beams or o.num_beams, max_new_tokens=self._max_new(),
                                      **sampling)
            for i, text in zip(idx, self.tok.batch_decode(gen, skip_special_tokens=True)):
                out[i] = text.strip()
        return out

    @torch.no_grad()
    def score(self, sources: list[str], outputs: list[str]) -> list[float]:
        """Mean log-prob per target token (EOS included) of each output given its source: force decoding."""
        scores: list[float] = []
        o = self.options
        for b in range(0, len(sources), o.batch_size):
            src, tgt = sources[b:b + o.batch_size], outputs[b:b + o.batch_size]
            enc = self.tok(src, text_target=tgt, return_tensors="pt", padding=True, truncation=True,
                           max_length=self._max_new() + 1).to(self.model.device)
            labels = enc.pop("labels")
            labels = labels.masked_fill(labels == self.tok.pad_token_id, -100)
            logits = self.model(**enc, labels=labels).logits.float()
            logp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
            mask = labels != -100
            scores += ((logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)).tolist()
        return scores
