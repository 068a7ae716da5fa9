"""Sequence-level combination: rerank pooled n-best lists, or pick by minimum Bayes risk.

- `rerank`: every member scores every candidate by forced decoding (one
  batched forward per member, any tokenizer: each member tokenises the
  candidate text itself); the ensemble score is the weighted average (or sum)
  of the members' length-normalised log-probs (summed log-prob / tokens).
- `mbr_select`: the candidate with the highest expected utility against the
  other candidates taken as pseudo-references (sentence BLEU or chrF from
  sacrebleu), optionally weighted by candidate probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import torch
from sacrebleu.metrics import BLEU, CHRF

from stages.methods.ensembling.ensemble_members import Member
from stages.methods.ensembling.forced_scoring import sequence_logprobs
from stages.methods.ensembling.token_search import BeamHypothesis


@dataclass
class ScoredCandidate:
    text: str
    score: float  # ensemble score (higher is better)
    member_scores: list[float] = field(default_factory=list)  # each member's length-normalised log-prob


def pool_nbest(*nbest_lists: Sequence[Sequence[BeamHypothesis | str]]) -> list[list[str]]:
    """Merge several systems' n-best lists per source; duplicates kept once, first-seen order."""
    pooled = []
    for per_source in zip(*nbest_lists):
        seen: dict[str, None] = {}
        for nbest in per_source:
            for cand in nbest:
                seen.setdefault(cand.text if isinstance(cand, BeamHypothesis) else cand, None)
        pooled.append(list(seen))
    return pooled


def rerank(members: Sequence[Member], sources: Sequence[str], candidates: Sequence[Sequence[str]],
           weights: Sequence[float] | None = None, combine: Literal["mean", "sum"] = "mean",
           batch_size: int | None = None) -> list[list[ScoredCandidate]]:
    """Candidates of each source, best first, by the members' combined length-normalised log-prob."""
    flat_src = [s for s, cands in zip(sources, candidates) for _ in cands]
    flat_cand = [c for cands in candidates for c in cands]
    w = torch.ones(len(members)) if weights is None else torch.tensor(list(weights), dtype=torch.float32)
    if combine == "mean":
        w = w / w.sum()
    per_member = []
    for member in members:
        total, count = sequence_logprobs(member, flat_src, flat_cand, batch_size=batch_size)
        per_member.append(total / count.clamp(min=1))
    scores = torch.stack(per_member, dim=1)  # [candidates, M]
    ensemble = scores @ w
    out, i = [], 0
    for cands in candidates:
        rows = [ScoredCandidate(c, float(ensemble[i + j]), scores[i + j].tolist()) for j, c in enumerate(cands)]
        out.append(sorted(rows, key=lambda r: r.score, reverse=True))
        i += len(cands)
    return out


_BLEU = BLEU(effective_order=True)
_CHRF = CHRF()


def sentence_utility(name: Literal["bleu", "chrf"]) -> Callable[[str, str], float]:
    metric = {"bleu": _BLEU, "chrf": _CHRF}[name]
    return lambda hyp, ref: metric.sentence_score(hyp, [ref]).score


@dataclass
class MBRResult:
    best_index: int
    best: str
    expected_utility: list[float]


def mbr_select(candidates: Sequence[str], utility: Literal["bleu", "chrf"] | Callable[[str, str], float] = "chrf",
               weights: Sequence[float] | None = None, include_self: bool = False) -> MBRResult:
    """argmax_h sum_r w_r U(h, r) / sum_r w_r over pseudo-references r (all candidates, or all but h)."""
    if not candidates:
        raise ValueError("MBR needs at least one candidate")
    u = sentence_utility(utility) if isinstance(utility, str) else utility
    n = len(candidates)
    w = [1.0] * n if weights is None else [float(x) for x in weights]
    expected = []
    for i, hyp in enumerate(candidates):
        refs = [j for j in range(n) if include_self or j != i] or [i]
        mass = sum(w[j] for j in refs)
        expected.append(sum(w[j] * u(hyp, candidates[j]) for j in refs) / mass if mass > 0 else 0.0)
    best = max(range(n), key=lambda i: expected[i])
    return MBRResult(best, candidates[best], expected)
