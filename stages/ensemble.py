"""Ensemble MT: several seq2seq models decode together, token by token (see stages/ensemble).

Drops into the speech-translation cascade in place of `Translate`: same Input,
same Output. Members share a vocabulary; each keeps its own KV cache.

Members for your data: `cascade train bagged` (bootstrap members) or `cascade train
checkpoints` (a checkpoint series); both write members.json. `cascade train router` fits
the router; `cascade train word-kd` / `seq-kd` distil the ensemble into one student.
"""
from __future__ import annotations

import torch
from pydantic import Field, field_validator, model_validator

from stages.base import Stage, StageConfig
from stages.methods.segment_translation import translate_items
from stages.runtime.hf_loading import hf_identity, load_hf
from stages.runtime.model_cache import load_cached, path_identity, pick_device
from stages.payloads import Hypothesis, Translation
from stages.runtime.model_languages import check_target_language
from stages.translate import SourceText, model_max_positions, tokenizer_vocab


class EnsembleTranslateConfig(StageConfig):
    members: list[str] = Field(..., min_length=1, description="hub ids or local dirs sharing one vocabulary")
    weights: list[float] | None = Field(None, description="λ per member; None = uniform; log_linear allows < 0")
    combiner: str = Field("linear", description="linear, log_linear, or a `cascadekit.combiners` entry point")
    router: str | None = Field(None, description="dir of a trained router (router.json + safetensors)")
    top_k: int | None = Field(None, ge=1, description="with a router: run only the k best members per input")
    num_beams: int = Field(4, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    max_input_tokens: int = Field(512, ge=1)
    length_penalty: float = 1.0
    nbest: int = Field(0, ge=0)
    use_upstream_nbest: bool = Field(False, description="translate every upstream hypothesis; keep the best "
                                     "by upstream score × weight + translation score")
    upstream_weight: float = 1.0
    generate_batch: int = Field(32, ge=1)
    target_lang: str | None = None
    dtype: str = "auto"

    @field_validator("combiner")
    @classmethod
    def _known_combiner(cls, name: str) -> str:
        from stages.methods.ensembling.combiners import COMBINERS  # the ensembling package is slow to import

        if name not in COMBINERS:
            raise ValueError(f"unknown combiner {name!r}; known: {', '.join(COMBINERS.names())}")
        return name

    @model_validator(mode="after")
    def _weights_match(self):
        if self.weights is not None and len(self.weights) != len(self.members):
            raise ValueError(f"{len(self.weights)} weights for {len(self.members)} members")
        return self


class EnsembleTranslate(Stage):
    """Text -> translation by a token-level ensemble of seq2seq models (linear / log-linear / routed)."""

    Input = SourceText
    Output = Translation
    Config = EnsembleTranslateConfig
    kind = "ensemble_mt"
    uses_gpu = True

    def model_identity(self) -> str:
        ids = [hf_identity(m, None) for m in self.config.members]
        return "|".join(ids + ([path_identity(self.config.router)] if self.config.router else []))

    def preflight(self) -> None:
        """Every member must be able to write target_lang (see Translate.preflight)."""
        if self.config.target_lang:
            for m in self.config.members:
                check_target_language(m, self.config.target_lang, tokenizer_vocab(m))

    def members(self):
        from stages.methods.ensembling import Member

        c = self.config
        loaded = [load_hf("AutoModelForSeq2SeqLM", m, c.device, c.dtype) for m in c.members]
        return [Member(model=m, tokenizer=t, name=f"m{i}") for i, (m, t) in enumerate(loaded)]

    def router(self):
        from stages.methods.ensembling import MemberRouter

        device = pick_device(self.config.device)
        return load_cached("router", self.config.router, device, torch.float32,
                           lambda: MemberRouter.load(self.config.router).to(device))

    def process(self, batch: list[SourceText]) -> list:
        cfg = self.config
        members = self.members()
        tok = members[0].tokenizer
        limit = min(cfg.max_input_tokens, *(model_max_positions(m.model) for m in members))
        results: list = [None] * len(batch)
        todo = []
        for i, item in enumerate(batch):
            if not item.text.strip():
                results[i] = Translation(text="", language=cfg.target_lang, source_text=item.text)
            else:
                todo.append(i)
        done = translate_items(batch, todo, use_nbest=cfg.use_upstream_nbest, upstream_weight=cfg.upstream_weight,
                               count=lambda t: len(tok(t)["input_ids"]), max_tokens=limit,
                               target_lang=cfg.target_lang, nbest=cfg.nbest,
                               translate=lambda texts, _langs: self._translate(texts, members, limit))
        for i, result in done.items():
            results[i] = result
        return results

    def _translate(self, sources: list[str], members, limit: int) -> list[list[Hypothesis]]:
        """One n-best list per source, batched in length order (less padding per decode call)."""
        hyps: list[list[Hypothesis]] = [[] for _ in sources]
        order = sorted((j for j, s in enumerate(sources) if s.strip()), key=lambda j: len(sources[j]))
        for b in range(0, len(order), self.config.generate_batch):
            idx = order[b:b + self.config.generate_batch]
            for j, nbest in zip(idx, self.decode([sources[j] for j in idx], members, limit)):
                hyps[j] = [Hypothesis(text=h.text.strip(), score=h.logprob) for h in nbest]
        return hyps

    def decode(self, sources: list[str], members, limit: int):
        from stages.methods.ensembling import ensemble_generate, routed_generate

        cfg = self.config
        kwargs = dict(num_beams=cfg.num_beams, num_return_sequences=max(1, min(cfg.nbest, cfg.num_beams)),
                      max_new_tokens=min(cfg.max_new_tokens, limit - 1), length_penalty=cfg.length_penalty,
                      combiner=cfg.combiner)
        if cfg.router:
            return routed_generate(members, self.router(), sources, top_k=cfg.top_k, **kwargs)
        return ensemble_generate(members, sources, weights=cfg.weights, **kwargs)
