"""Critics: judge (input, output) pairs and say whether an item is done.

    PromptCritic        an LM writes feedback; done when it contains a marker
    RoundTripCritic     translate back with a reverse model, chrF against the source
    LMScoreCritic       mean per-token log-prob under a causal LM (fluency)
    Seq2SeqScoreCritic  mean per-token log-prob of the output under a seq2seq model (confidence)

A metric critic's score is what keep-best refinement compares; it is done
when the score reaches its threshold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from stages.methods.refinement.prompting import PromptLM, fill
from stages.methods.refinement.seq2seq_part import Seq2Seq


@dataclass
class Feedback:
    score: float | None = None
    text: str | None = None
    done: bool = False


class Critic(Protocol):
    def __call__(self, inputs: list[str], outputs: list[str]) -> list[Feedback]: ...


class PromptCritic:
    def __init__(self, lm: PromptLM, template: str, done_marker: str):
        self.lm, self.template, self.done_marker = lm, template, done_marker

    def prompt(self, source: str, output: str) -> str:
        return fill(self.template, input=source, output=output, done=self.done_marker)

    def __call__(self, inputs: list[str], outputs: list[str]) -> list[Feedback]:
        texts = self.lm([self.prompt(x, y) for x, y in zip(inputs, outputs)])
        marker = self.done_marker.lower()
        return [Feedback(text=t, done=bool(marker) and marker in t.lower()) for t in texts]


class RoundTripCritic:
    def __init__(self, reverse: Seq2Seq, threshold: float):
        self.reverse, self.threshold = reverse, threshold

    def __call__(self, inputs: list[str], outputs: list[str]) -> list[Feedback]:
        import sacrebleu

        back = self.reverse.decode(outputs)
        scores = [sacrebleu.sentence_chrf(b, [x]).score for b, x in zip(back, inputs)]
        return [Feedback(score=s, text=f"back-translation: {b}", done=s >= self.threshold)
                for s, b in zip(scores, back)]


class LMScoreCritic:
    def __init__(self, model, tokenizer, threshold: float, batch_size: int = 32):
        self.model, self.tok, self.threshold, self.batch_size = model, tokenizer, threshold, batch_size

    def __call__(self, inputs: list[str], outputs: list[str]) -> list[Feedback]:
        scores = self.score(outputs)
        return [Feedback(score=s, text=None if s is None else f"lm log-prob/token {s:.3f}",
                         done=s is not None and s >= self.threshold) for s in scores]

    def _ids(self, text: str) -> list[int]:
        ids = self.tok(text)["input_ids"]
        # the first word needs a context to be scored: BOS, or EOS as GPT-2 uses it
        start = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        if start is not None and (not ids or ids[0] != start):
            ids = [start] + ids
        limit = getattr(self.model.config, "n_positions", None) or getattr(
            self.model.config, "max_position_embeddings", None) or len(ids)
        return ids[:limit]

    @torch.no_grad()
    def score(self, texts: list[str]) -> list[float | None]:
        """Mean log-prob of tokens 1…n given their prefix; None when nothing is scored (empty text)."""
        out: list[float | None] = []
        for b in range(0, len(texts), self.batch_size):
            seqs = [self._ids(t) for t in texts[b:b + self.batch_size]]
            width = max(len(s) for s in seqs)
            ids = torch.zeros(len(seqs), width, dtype=torch.long)
            mask = torch.zeros(len(seqs), width, dtype=torch.long)
            for i, s in enumerate(seqs):  # right padding: positions stay 0…n-1 for every row
                ids[i, :len(s)] = torch.tensor(s)
                mask[i, :len(s)] = 1
            ids, mask = ids.to(self.model.device), mask.to(self.model.device)
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
            m = mask[:, 1:].float()
            n = m.sum(-1)
            mean = (logp * m).sum(-1) / n.clamp(min=1)
            out += [float(v) if k > 0 else None for v, k in zip(mean.tolist(), n.tolist())]
        return out


class Seq2SeqScoreCritic:
    def __init__(self, scorer: Seq2Seq, threshold: float):
        self.scorer, self.threshold = scorer, threshold

    def __call__(self, inputs: list[str], outputs: list[str]) -> list[Feedback]:
        scores = self.scorer.score(inputs, outputs)
        return [Feedback(score=s, text=f"model log-prob/token {s:.3f}", done=s >= self.threshold) for s in scores]
