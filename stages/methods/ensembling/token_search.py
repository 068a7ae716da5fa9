"""Token selectors (greedy, beam) and length penalties for the decoding loop.

A selector owns the generated tokens. Each step it receives the combined
next-token log-probs for its rows and returns the row order the members must
apply to their caches (None when rows keep their place). Beam search mirrors
transformers' vectorised `_beam_search` (same candidate count, the same
-1e9 masking arithmetic, the same early-stop heuristic) so that a one-member
ensemble returns exactly what `generate` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

import torch

_NEG = -1.0e9  # the "impossible" score `generate` uses; kept identical for tie-breaking parity


@dataclass
class BeamHypothesis:
    token_ids: list[int]  # generated tokens, including the final EOS when there is one
    score: float  # ranking score: summed log-prob after the length penalty
    logprob: float  # summed log-prob of the combined distribution
    text: str = ""


class LengthPenalty(Protocol):
    def __call__(self, scores: torch.Tensor, length: int) -> torch.Tensor: ...


class PowerLengthPenalty:
    """`generate`'s rule: score / length ** alpha (alpha > 0 favours long outputs)."""

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def __call__(self, scores: torch.Tensor, length: int) -> torch.Tensor:
        return scores / (length**self.alpha)

    @property
    def favours_length(self) -> bool:
        return self.alpha > 0.0


class GNMTLengthPenalty:
    """Wu et al. 2016: score / ((5 + length) / 6) ** alpha."""

    def __init__(self, alpha: float = 0.6):
        self.alpha = alpha

    def __call__(self, scores: torch.Tensor, length: int) -> torch.Tensor:
        return scores / (((5 + length) / 6) ** self.alpha)

    @property
    def favours_length(self) -> bool:
        return self.alpha > 0.0


class Selector(Protocol):
    finished: bool

    @property
    def generated(self) -> torch.Tensor: ...  # [rows, t]

    def step(self, log_probs: torch.Tensor) -> torch.Tensor | None: ...

    def finalize(self) -> list[list[BeamHypothesis]]: ...


class GreedySearch:
    """argmax each step; finished rows are padded, like `generate`."""

    def __init__(self, batch_size: int, max_new: int, eos_token_ids: Sequence[int], pad_token_id: int,
                 length_penalty: LengthPenalty | None = None, device: torch.device | str = "cpu"):
        self.max_new = max_new
        self.eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=device)
        self.pad = pad_token_id
        self.length_penalty = length_penalty or PowerLengthPenalty(1.0)
        self.tokens = torch.full((batch_size, max_new), pad_token_id, dtype=torch.long, device=device)
        self.logprob = torch.zeros(batch_size, device=device)
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.unfinished = torch.ones(batch_size, dtype=torch.bool, device=device)
        self.t = 0
        self.finished = False

    @property
    def rows_per_input(self) -> int:
        return 1

    @property
    def generated(self) -> torch.Tensor:
        return self.tokens[:, : self.t]

    def step(self, log_probs: torch.Tensor) -> None:
        next_tokens = torch.argmax(log_probs, dim=-1)
        next_tokens = torch.where(self.unfinished, next_tokens, torch.full_like(next_tokens, self.pad))
        picked = log_probs.gather(1, next_tokens[:, None]).squeeze(1)
        self.logprob += torch.where(self.unfinished, picked, torch.zeros_like(picked))
        self.lengths += self.unfinished.long()
        self.tokens[:, self.t] = next_tokens
        self.t += 1
        stops = torch.isin(next_tokens, self.eos) | (self.t >= self.max_new)
        self.unfinished &= ~stops
        self.finished = not bool(self.unfinished.any())
        return None

    def finalize(self) -> list[list[BeamHypothesis]]:
        out = []
        for row in range(self.tokens.shape[0]):
            n = int(self.lengths[row])
            lp = float(self.logprob[row])
            score = float(self.length_penalty(self.logprob[row : row + 1], max(n, 1))[0])
            out.append([BeamHypothesis(self.tokens[row, :n].tolist(), score, lp)])
        return out


class BeamSearch:
    """Beam search over `num_beams` rows per input; returns the best `num_return` per input.

    `early_stopping`: True stops an input once `num_beams` hypotheses are done;
    False stops when the best running beam, scored at the current length,
    cannot beat the worst finished one; "never" scores it at the maximum
    length when the penalty favours long outputs (the exact criterion).
    """

    def __init__(self, batch_size: int, num_beams: int, max_new: int, eos_token_ids: Sequence[int],
                 pad_token_id: int, length_penalty: LengthPenalty | None = None,
                 early_stopping: bool | Literal["never"] = False, num_return: int = 1,
                 device: torch.device | str = "cpu"):
        if num_return > num_beams:
            raise ValueError(f"num_return_sequences={num_return} exceeds num_beams={num_beams}")
        B, K = batch_size, num_beams
        self.B, self.K, self.max_new, self.num_return = B, K, max_new, num_return
        self.eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=device)
        self.length_penalty = length_penalty or PowerLengthPenalty(1.0)
        self.early_stopping = early_stopping
        # Keep enough candidates that K of them can continue even if many just hit EOS.
        self.n_candidates = max(2, 1 + len(self.eos)) * K
        self.top_k_mask = torch.arange(self.n_candidates, device=device) < K
        self.running = torch.full((B, K, max_new), pad_token_id, dtype=torch.long, device=device)
        self.running_scores = torch.zeros((B, K), device=device)
        self.running_scores[:, 1:] = _NEG  # all beams start identical: only beam 0 may expand at step 0
        self.done = self.running.clone()
        self.done_scores = torch.full((B, K), _NEG, device=device)
        self.done_logprob = torch.full((B, K), _NEG, device=device)
        self.done_lengths = torch.zeros((B, K), dtype=torch.long, device=device)
        self.is_done = torch.zeros((B, K), dtype=torch.bool, device=device)
        self.improvable = torch.ones((B, 1), dtype=torch.bool, device=device)
        self.batch_offset = torch.arange(B, device=device)[:, None] * K
        self.t = 0
        self.finished = False

    @property
    def rows_per_input(self) -> int:
        return self.K

    @property
    def generated(self) -> torch.Tensor:
        return self.running[:, :, : self.t].reshape(self.B * self.K, self.t)

    def step(self, log_probs: torch.Tensor) -> torch.Tensor:
        B, K, t = self.B, self.K, self.t
        vocab = log_probs.shape[-1]
        totals = (log_probs.view(B, K, vocab) + self.running_scores[:, :, None]).reshape(B, K * vocab)
        cand_scores, flat = torch.topk(totals, k=self.n_candidates)
        cand_beam, cand_token = flat // vocab, flat % vocab
        cand_seqs = _gather(self.running, cand_beam)
        cand_seqs[:, :, t] = cand_token
        stops = torch.isin(cand_token, self.eos) | (t + 1 >= self.max_new)

        # Running beams for the next step: the best K candidates that did not stop.
        alive_scores = cand_scores + stops.float() * _NEG
        keep = torch.topk(alive_scores, k=K)[1]
        self.running = _gather(cand_seqs, keep)
        self.running_scores = _gather(alive_scores, keep)
        source_beam = _gather(cand_beam, keep)

        # Finished hypotheses: only stopping candidates ranked in the top K may enter.
        normed = self.length_penalty(cand_scores, t + 1)
        full = self.is_done.all(dim=-1, keepdim=True) & (self.early_stopping is True)
        normed = normed + full.float() * _NEG
        normed = normed + (~self.improvable).float() * _NEG
        entering = stops & self.top_k_mask[None, :]
        normed = normed + (~entering) * _NEG
        pool_scores = torch.cat((self.done_scores, normed), dim=1)
        best = torch.topk(pool_scores, k=K)[1]
        self.done = _gather(torch.cat((self.done, cand_seqs), dim=1), best)
        self.done_scores = _gather(pool_scores, best)
        self.done_logprob = _gather(torch.cat((self.done_logprob, cand_scores), dim=1), best)
        lengths = torch.full_like(cand_beam, t + 1)
        self.done_lengths = _gather(torch.cat((self.done_lengths, lengths), dim=1), best)
        self.is_done = _gather(torch.cat((self.is_done, entering), dim=1), best)

        self.t = t + 1
        self._update_improvable()
        open_beam = ~(self.is_done.all() & (self.early_stopping is True))
        self.finished = not bool(self.improvable.any() & open_beam & ~stops.all())
        return (source_beam + self.batch_offset).reshape(B * K)

    def _update_improvable(self) -> None:
        if self.early_stopping == "never" and getattr(self.length_penalty, "favours_length", True):
            best_length = self.max_new
        else:
            best_length = self.t
        best_running = self.length_penalty(self.running_scores[:, :1], best_length)
        worst_done = torch.where(self.is_done, self.done_scores.min(dim=1, keepdim=True)[0], _NEG)
        self.improvable = self.improvable & (best_running > worst_done).any(dim=-1, keepdim=True)

    def finalize(self) -> list[list[BeamHypothesis]]:
        out = []
        for b in range(self.B):
            nbest = []
            for k in range(self.num_return):
                n = int(self.done_lengths[b, k])
                nbest.append(BeamHypothesis(self.done[b, k, :n].tolist(), float(self.done_scores[b, k]),
                                        float(self.done_logprob[b, k])))
            out.append(nbest)
        return out


def _gather(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select along the beam axis (dim 1) for every input of the batch."""
    while index.dim() < tensor.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(tensor, index, dim=1)
