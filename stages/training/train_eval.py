"""Evaluation helpers shared by training, the demo and job metrics: BLEU, WER, batched translation.

One WER normaliser for the whole tree (`normalize_transcript`): lowercase, drop
punctuation (apostrophes too, so "don't" stays one word), collapse whitespace.
"""
from __future__ import annotations

import re

_NOT_WORD = re.compile(r"[^\w\s]")


def normalize_transcript(text: str) -> str:
    return " ".join(_NOT_WORD.sub("", text.lower()).split())


def bleu(hyps: list[str], refs: list[str]) -> float:
    """Corpus BLEU with sacrebleu's defaults (13a tokenisation)."""
    import sacrebleu

    return sacrebleu.corpus_bleu(hyps, [refs]).score


def wer(hyps: list[str], refs: list[str]) -> float:
    """Corpus WER in percent after `normalize_transcript`; items with an empty reference are left out."""
    import jiwer

    pairs = [(normalize_transcript(h), normalize_transcript(r)) for h, r in zip(hyps, refs)]
    pairs = [(h, r) for h, r in pairs if r]
    if not pairs:
        return float("nan")
    return 100.0 * jiwer.wer([r for _, r in pairs], [h for h, _ in pairs])


def translate(model, tokenizer, sources: list[str], batch_size: int = 64, num_beams: int | None = None,
              max_new_tokens: int | None = None) -> list[str]:
    """`model.generate` over `sources` in batches (its generation config unless beams/length are given)."""
    import torch

    was_training = model.training
    model.eval()
    kwargs = {k: v for k, v in (("num_beams", num_beams), ("max_new_tokens", max_new_tokens)) if v is not None}
    out: list[str] = []
    with torch.no_grad():
        for b in range(0, len(sources), batch_size):
            enc = tokenizer(sources[b:b + batch_size], return_tensors="pt", padding=True, truncation=True)
            out += tokenizer.batch_decode(model.generate(**enc.to(model.device), **kwargs), skip_special_tokens=True)
    model.train(was_training)
    return out
