"""Corpus metrics computed on a job's outputs when the items carry references."""
from __future__ import annotations

from typing import Callable

# One WER normaliser and one BLEU for the whole tree: training, the demo and job metrics agree.
from stages.training.train_eval import bleu, normalize_transcript as normalize_text, wer


def cer(hyps: list[str], refs: list[str]) -> float:
    import jiwer

    pairs = [(normalize_text(h), normalize_text(r)) for h, r in zip(hyps, refs) if normalize_text(r)]
    if not pairs:
        return float("nan")
    return 100.0 * jiwer.cer([r for _, r in pairs], [h for h, _ in pairs])


def chrf(hyps: list[str], refs: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_chrf(hyps, [refs]).score


METRICS: dict[str, Callable[[list[str], list[str]], float]] = {"wer": wer, "cer": cer, "bleu": bleu, "chrf": chrf}
