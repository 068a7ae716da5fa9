"""Machine translation with any transformers seq2seq model (Marian, NLLB, M2M100, T5, ...)."""
from __future__ import annotations

import weakref
from typing import Literal

import torch
from pydantic import BaseModel, Field

from stages.base import ItemFailure, Stage, StageConfig
from stages.methods.segment_translation import translate_items
from stages.runtime.hf_loading import hf_identity, load_hf
from stages.runtime.model_languages import check_target_language, language_tokens, pick_language_token
from stages.payloads import Hypothesis, Segment, Translation

class SourceText(BaseModel):
    text: str
    language: str | None = Field(None, description="source language; the config's source_lang when unset")
    nbest: list[Hypothesis] | None = Field(None, description="alternatives from upstream (e.g. ASR n-best)")
    segments: list[Segment] | None = Field(None, description="timestamped ASR segments: translated one by one "
                                           "(stages/methods/segment_translation.py)")


class TranslateConfig(StageConfig):
    model: str = Field(..., description="hub id or local dir")
    revision: str | None = None
    source_lang: str | None = None
    target_lang: str | None = None
    num_beams: int = Field(4, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    max_input_tokens: int = Field(512, ge=1, description="longer plain texts fail per item; longer ASR segments "
                                  "are cut into pieces and flagged `split`")
    length_penalty: float = 1.0
    nbest: int = Field(0, ge=0, description="return this many translations (≤ num_beams)")
    use_upstream_nbest: bool = Field(False, description="translate every upstream hypothesis; keep the best "
                                     "by upstream score × weight + translation score")
    upstream_weight: float = 1.0
    generate_batch: int = Field(32, ge=1)
    empty_source: Literal["error", "empty"] = Field(
        "error", description="empty or blank text: a per-item error, or an empty translation (e.g. after silence)")
    dtype: str = "auto"
    trust_remote_code: bool = False


class Translate(Stage):
    """Text -> translation (transformers AutoModelForSeq2SeqLM, batched beam search)."""

    Input = SourceText
    Output = Translation
    Config = TranslateConfig
    kind = "mt"
    uses_gpu = True

    def model_identity(self) -> str:
        return hf_identity(self.config.model, self.config.revision)

    def load(self):
        c = self.config
        return load_hf("AutoModelForSeq2SeqLM", c.model, c.device, c.dtype, c.revision, c.trust_remote_code)

    def preflight(self) -> None:
        """An unknown target code, or one the model cannot write (its name, config or language tokens
        say so), is a usage error before any item runs, not German labelled 'fr'."""
        c = self.config
        if c.target_lang:
            check_target_language(c.model, c.target_lang, tokenizer_vocab(c.model, c.revision, c.trust_remote_code))

    def process(self, batch: list[SourceText]) -> list:
        model, tok = self.load()
        cfg = self.config
        max_in = min(cfg.max_input_tokens, model_max_positions(model))
        results: list = [None] * len(batch)
        todo = []
        for i, item in enumerate(batch):
            if not item.text.strip() and cfg.empty_source == "error":
                results[i] = ItemFailure("source text is empty or blank (set empty_source='empty' to pass it on)")
            else:
                todo.append(i)
        count = lambda t: len(tok(t, add_special_tokens=True)["input_ids"])  # noqa: E731
        done = translate_items(batch, todo, use_nbest=cfg.use_upstream_nbest, upstream_weight=cfg.upstream_weight,
                               count=count, max_tokens=max_in, target_lang=cfg.target_lang, nbest=cfg.nbest,
                               translate=lambda texts, langs: self.translate(texts, langs, model, tok))
        for i, result in done.items():
            results[i] = result
        return results

    @torch.no_grad()
    def translate(self, texts: list[str], languages: list[str | None], model, tok) -> list[list[Hypothesis]]:
        cfg = self.config
        n_return = max(1, min(cfg.nbest, cfg.num_beams))
        out: list[list[Hypothesis]] = [[] for _ in texts]
        todo = [i for i, t in enumerate(texts) if t.strip()]  # empty source -> empty translation
        # Sorting by length keeps padding (wasted compute) low inside each generate call.
        todo.sort(key=lambda i: len(texts[i]))
        for b in range(0, len(todo), cfg.generate_batch):
            idx = todo[b:b + cfg.generate_batch]
            # Groups with one source language at a time (multilingual tokenizers prefix it).
            for lang in dict.fromkeys(languages[i] or cfg.source_lang for i in idx):
                group = [i for i in idx if (languages[i] or cfg.source_lang) == lang]
                for i, hyps in zip(group, self._generate([texts[i] for i in group], lang, model, tok, n_return)):
                    out[i] = hyps
        return out

    def _generate(self, texts, source_lang, model, tok, n_return) -> list[list[Hypothesis]]:
        cfg = self.config
        kwargs = generation_kwargs(tok, source_lang, cfg.target_lang)
        prefix = kwargs.pop("_prefix", "")
        enc = tok([prefix + t for t in texts], return_tensors="pt", padding=True).to(model.device)
        max_new = min(cfg.max_new_tokens, model_max_positions(model) - 1)
        gen = model.generate(**enc, num_beams=cfg.num_beams, max_new_tokens=max_new,
                             length_penalty=cfg.length_penalty, num_return_sequences=n_return,
                             output_scores=True, return_dict_in_generate=True, **kwargs)
        decoded = tok.batch_decode(gen.sequences, skip_special_tokens=True)
        if cfg.num_beams > 1:
            scores = gen.sequences_scores.tolist()
        else:  # greedy: sum of the chosen tokens' log-probs
            scores = model.compute_transition_scores(gen.sequences, gen.scores, normalize_logits=True).sum(-1).tolist()
        return [[Hypothesis(text=decoded[k].strip(), score=scores[k]) for k in range(j * n_return, (j + 1) * n_return)]
                for j in range(len(texts))]


def model_max_positions(model) -> int:
    """Longest sequence the model's position embeddings allow (a big number when unbounded)."""
    return int(getattr(model.config, "max_position_embeddings", None) or 1_000_000)


def tokenizer_vocab(model: str, revision: str | None = None, trust_remote_code: bool = False) -> dict | None:
    """The tokenizer's vocabulary without downloading or loading weights; None when it cannot be read
    here (the model load reports that)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model, revision=revision, local_files_only=True,
                                             trust_remote_code=trust_remote_code).get_vocab()
    except Exception:  # noqa: BLE001 - any failure here is the loader's to explain
        return None


_LANGUAGE_TOKENS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> its language tokens


def generation_kwargs(tok, source_lang: str | None, target_lang: str | None) -> dict:
    """Language handling for multilingual models: a forced first token (M2M100 `__fr__`, NLLB
    `fra_Latn`, mBART `fr_XX`) or a `>>fra<<` prefix (multi-target Marian); single-pair models: none."""
    kwargs: dict = {}
    tokens = _LANGUAGE_TOKENS.get(tok)
    if tokens is None:  # a scan of the whole vocabulary: once per tokenizer, not per generate call
        tokens = _LANGUAGE_TOKENS[tok] = language_tokens(tok.get_vocab())
    if not tokens:
        return kwargs
    if source_lang and hasattr(tok, "src_lang"):
        source = pick_language_token(tokens, source_lang)
        if source and not source.startswith(">>"):
            tok.src_lang = source.strip("_")  # M2M100 takes 'en' for __en__; NLLB, mBART the token itself
    target = pick_language_token(tokens, target_lang) if target_lang else None
    if target and target.startswith(">>"):
        kwargs["_prefix"] = f"{target} "
    elif target:
        kwargs["forced_bos_token_id"] = tok.convert_tokens_to_ids(target)
    return kwargs
