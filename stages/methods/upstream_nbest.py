"""Translate every hypothesis of an upstream n-best list (e.g. ASR) and keep the best combined score.

    jobs, failures = candidate_sources(batch, use_nbest, token_count, max_tokens)
    hyps = translate([text for _, text, _ in jobs])          # one n-best list per job
    best = best_by_item(jobs, hyps, upstream_weight)          # item index -> (text, n-best)

The combined score of a candidate is upstream_weight × its upstream score + its translation's score.
"""
from __future__ import annotations

from typing import Callable, Sequence

from stages.base import ItemFailure


def candidate_sources(batch: Sequence, use_nbest: bool, token_count: Callable[[str], int],
                      max_tokens: int) -> tuple[list[tuple[int, str, float]], dict[int, ItemFailure]]:
    """(item index, source text, upstream score) per candidate; candidate 0 is the 1-best text.

    An item any of whose candidates is over `max_tokens` fails as a whole (its other candidates are dropped).
    """
    jobs: list[tuple[int, str, float]] = []
    failures: dict[int, ItemFailure] = {}
    for i, item in enumerate(batch):
        sources = [(h.text, h.score) for h in item.nbest] if use_nbest and item.nbest else [(item.text, 0.0)]
        for text, score in sources:
            n = token_count(text)
            if n > max_tokens:
                failures[i] = ItemFailure(f"source has {n} tokens, over max_input_tokens={max_tokens} "
                                          "(config or model limit); split the text")
                break
            jobs.append((i, text, score))
    return [j for j in jobs if j[0] not in failures], failures


def best_by_item(jobs: Sequence[tuple[int, str, float]], hyps: Sequence[list], upstream_weight: float) -> dict:
    """Item index -> (source text, translation n-best) of the candidate with the best combined score."""
    best: dict[int, tuple[float, str, list]] = {}
    for (i, text, up_score), nbest in zip(jobs, hyps):
        total = upstream_weight * up_score + (nbest[0].score if nbest else 0.0)
        if i not in best or total > best[i][0]:
            best[i] = (total, text, nbest)
    return {i: (text, nbest) for i, (_, text, nbest) in best.items()}
