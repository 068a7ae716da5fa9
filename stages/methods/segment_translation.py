"""Translate a timestamped transcript piece by piece, batched across every item of a micro-batch.

The rule for what one MT input is (a "unit"):
- each ASR segment is a unit, except that a segment whose text does not end a sentence
  (no final . ! ? … 。 ！ ？, optionally followed by a closing quote or bracket) is joined with the
  next segment, as long as the joined text stays within the MT's token limit; the unit spans
  the first segment's start to the last one's end;
- a unit still over the limit (one very long segment) is cut at word boundaries into pieces that
  fit (a single over-long word by tokens), the pieces are translated alone and joined again, and
  the unit is flagged `split`.

Items with at most one segment that fits keep the whole-text path (`upstream_nbest`): exactly
what the MT did before segments existed, n-best from upstream included.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

from stages.base import ItemFailure
from stages.methods.upstream_nbest import best_by_item, candidate_sources
from stages.payloads import Hypothesis, TranslatedSegment, Translation

_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’»)\]]*\s*$")

TokenCount = Callable[[str], int]
TranslateFn = Callable[[list[str], list[str | None]], list[list[Hypothesis]]]


@dataclass
class Unit:
    """One MT input built from consecutive segments, and the pieces it was cut into to fit."""

    start: float
    end: float
    source_text: str
    pieces: list[str] = field(default_factory=list)

    @property
    def split(self) -> bool:
        return len(self.pieces) > 1


def ends_sentence(text: str) -> bool:
    return bool(_SENTENCE_END.search(text))


def sentence_units(segments: Sequence, count: TokenCount, max_tokens: int) -> list[Unit]:
    """Segments (with .start, .end, .text) -> units by the module's rule; empty segments are skipped."""
    units: list[Unit] = []
    open_unit = False  # the last unit ends mid-sentence and may take the next segment
    for seg in segments:
        text = seg.text.strip()
        if not text:
            continue
        if open_unit and count(f"{units[-1].source_text} {text}") <= max_tokens:
            last = units[-1]
            last.source_text, last.end = f"{last.source_text} {text}", seg.end
        else:
            units.append(Unit(start=seg.start, end=seg.end, source_text=text))
        open_unit = not ends_sentence(units[-1].source_text)
    for unit in units:
        unit.pieces = split_by_tokens(unit.source_text, count, max_tokens)
    return units


def split_by_tokens(text: str, count: TokenCount, max_tokens: int) -> list[str]:
    """`text` as one piece when it fits, else greedy runs of words that each fit (checked with `count`,
    special tokens included); a word that alone is over the limit is cut by characters until it fits."""
    if count(text) <= max_tokens:
        return [text]
    pieces: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if count(candidate) <= max_tokens:
            current = candidate
            continue
        if current:
            pieces.append(current)
        current = ""
        while count(word) > max_tokens:  # one "word" longer than the limit (no spaces: URLs, CJK, noise)
            cut = _longest_prefix_that_fits(word, count, max_tokens)
            pieces.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        pieces.append(current)
    return pieces


def _longest_prefix_that_fits(word: str, count: TokenCount, max_tokens: int) -> int:
    lo, hi = 1, len(word)  # count(word[:1]) fits for any sane limit; binary search the rest
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(word[:mid]) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return lo


def needs_segments(item, count: TokenCount, max_tokens: int) -> bool:
    """Per-segment MT for items with several segments, or one that is over the limit."""
    segments = getattr(item, "segments", None) or []
    return len(segments) > 1 or (len(segments) == 1 and count(item.text) > max_tokens)


def translate_items(batch: Sequence, todo: Sequence[int], *, use_nbest: bool, upstream_weight: float,
                    count: TokenCount, max_tokens: int, translate: TranslateFn, target_lang: str | None,
                    nbest: int) -> dict[int, Translation | ItemFailure]:
    """Translation (or failure) per index of `todo`, with one `translate` call for every text of the batch."""
    whole = [i for i in todo if not needs_segments(batch[i], count, max_tokens)]
    segmented = [i for i in todo if i not in set(whole)]
    jobs, failures = candidate_sources([batch[i] for i in whole], use_nbest, count, max_tokens)
    jobs = [(whole[k], text, score) for k, text, score in jobs]
    results: dict[int, Translation | ItemFailure] = {whole[k]: f for k, f in failures.items()}
    units = {i: sentence_units(batch[i].segments, count, max_tokens) for i in segmented}
    pieces = [(i, p) for i in segmented for u in units[i] for p in u.pieces]
    hyps = translate([t for _, t, _ in jobs] + [p for _, p in pieces],
                     [batch[i].language for i, _, _ in jobs] + [batch[i].language for i, _ in pieces])
    for i, (text, nb) in best_by_item(jobs, hyps[: len(jobs)], upstream_weight).items():
        segs = getattr(batch[i], "segments", None)  # None: plain text; []: silence
        timed = None if segs is None else [TranslatedSegment(start=s.start, end=s.end, source_text=text,
                                                             text=nb[0].text if nb else "") for s in segs]
        results[i] = Translation(text=nb[0].text if nb else "", language=target_lang, source_text=text,
                                 score=nb[0].score if nb else None, nbest=nb[:nbest] if nbest else None,
                                 segments=timed)
    piece_hyps = iter(hyps[len(jobs):])
    for i in segmented:
        timed, score = [], 0.0
        for u in units[i]:
            got = [next(piece_hyps) for _ in u.pieces]
            score += sum(h[0].score for h in got if h)
            timed.append(TranslatedSegment(start=u.start, end=u.end, source_text=u.source_text,
                                           text=" ".join(h[0].text for h in got if h and h[0].text),
                                           split=u.split))
        results[i] = Translation(text=" ".join(t.text for t in timed if t.text), language=target_lang,
                                 source_text=" ".join(u.source_text for u in units[i]), score=score,
                                 segments=timed)
    return results
