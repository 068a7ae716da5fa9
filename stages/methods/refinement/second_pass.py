"""Deliberation: a second-pass seq2seq model reads the source and a first-pass draft, and writes the output.

The simplest robust form (no new architecture): the second pass is an
ordinary Marian-style model whose encoder input is

    source + SEP + " " + draft          (SEP defaults to the tokenizer's EOS, "</s>")

so its encoder (and hence every decoder cross-attention) sees both. With the
demo tokenizer this tokenises exactly as the concatenation of the two
encodings ("… source </s> draft </s>"). An empty draft gives "source</s>", so
the model also works, as a plain translator, without a first pass.
Training and inference must join texts with the same `join_source_draft`.

Iteration 0 of the loop is the draft; iterations 1 … passes re-read the
source with the latest output as the new draft.
"""
from __future__ import annotations

from typing import NamedTuple

from stages.methods.refinement.refine_loop import ItemState, refine_loop
from stages.methods.refinement.seq2seq_part import Seq2Seq


def join_source_draft(source: str, draft: str, separator: str) -> str:
    draft = draft.strip()
    return source.strip() + separator + (" " + draft if draft else "")


def fit_draft(tokenizer, source: str, draft: str, separator: str, max_tokens: int) -> str:
    """`draft` cut at the end, whole words only, so that the joined input has at most `max_tokens` tokens.

    A weak first pass can ramble until its length limit; the source is never cut (an empty draft is the
    least this returns, and the caller decides what to do with a source that alone is too long).
    """
    words = draft.split()

    def fits(k: int) -> bool:
        return len(tokenizer(join_source_draft(source, " ".join(words[:k]), separator))["input_ids"]) <= max_tokens

    if fits(len(words)):
        return draft.strip()
    lo, hi = 0, len(words)  # fits(lo) is assumed (or nothing fits); fits(hi) is false
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return " ".join(words[:lo])


class Drafted(NamedTuple):
    source: str
    draft: str


class DeliberationStep:
    def __init__(self, second_pass: Seq2Seq, separator: str | None = None, first_pass: Seq2Seq | None = None):
        self.second, self.first = second_pass, first_pass
        self.separator = separator if separator is not None else second_pass.tok.eos_token

    def __call__(self, states: list[ItemState], iteration: int) -> None:
        if iteration == 0:
            self._drafts(states)
            return
        joined = [join_source_draft(s.input.source, s.output, self.separator) for s in states]
        for s, out in zip(states, self.second.decode(joined)):
            s.output = out
            s.info = {"pass": "second"}

    def _drafts(self, states: list[ItemState]) -> None:
        missing = [s for s in states if not s.input.draft.strip()]
        made = self.first.decode([s.input.source for s in missing]) if self.first and missing else []
        for s in states:
            s.output = s.input.draft.strip()
            s.info = {"pass": "first", "draft_from": "input" if s.output else "none"}
        for s, draft in zip(missing, made):
            s.output = draft
            s.info = {"pass": "first", "draft_from": "first_pass_model"}


def deliberate(second_pass: Seq2Seq, items: list[Drafted], passes: int = 1, separator: str | None = None,
               first_pass: Seq2Seq | None = None, stop_when_unchanged: bool = True) -> list[ItemState]:
    step = DeliberationStep(second_pass, separator, first_pass)
    return refine_loop(items, step, passes + 1, stop_when_unchanged=stop_when_unchanged)
