"""Corpus metrics computed on a job's outputs when the items carry references."""
from __future__ import annotations

import re
import string
from typing import Callable

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_text(text: str) -> str:
    """WER normalisation: lowercase, punctuation removed, whitespace collapsed."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def wer(hyps: list[str], refs: list[str]) -> float:
    import jiwer

    pairs = [(normalize_text(h), normalize_text(r)) for h, r in zip(hyps, refs)]
    pairs = [(h, r) for h, r in pairs if r]
    if not pairs:
        return float("nan")
    return 100.0 * jiwer.wer([r for _, r in pairs], [h for h, _ in pairs])


def cer(hyps: list[str], refs: list[str]) -> float:
    import jiwer

    pairs = [(normalize_text(h), normalize_text(r)) for h, r in zip(hyps, refs) if normalize_text(r)]
    if not pairs:
        return float("nan")
    return 100.0 * jiwer.cer([r for _, r in pairs], [h for h, _ in pairs])


def bleu(hyps: list[str], refs: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(hyps, [refs]).score


def chrf(hyps: list[str], refs: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_chrf(hyps, [refs]).score


METRICS: dict[str, Callable[[list[str], list[str]], float]] = {"wer": wer, "cer": cer, "bleu": bleu, "chrf": chrf}
