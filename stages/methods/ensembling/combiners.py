"""Combiners: turn M members' next-token log-probs into one distribution.

Input `log_probs` is [M, rows, vocab] (each member already log-softmaxed),
`weights` is [rows, M] (one weight vector per decoding row, so a router can
weight each input differently). Output is [rows, vocab] log-probs.

- linear      p = sum_m w_m p_m, weights normalised per row to sum 1 (must be
              >= 0); computed as logsumexp_m(log w_m + log p_m). Behaves like
              OR: a token any weighted member supports keeps mass.
- log_linear  p ∝ exp(sum_m w_m log p_m), renormalised with log_softmax over
              the vocabulary; weights may be negative (negative evidence).
              Behaves like AND: a zero in any positively weighted member
              removes the token. A negatively weighted member must give every
              token a finite log-prob (softmax outputs do), else -w * -inf = +inf.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from stages.registry import Registry


class Combiner(Protocol):
    def __call__(self, log_probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor: ...


class LinearCombiner:
    def __init__(self):
        self._weights, self._log_w = None, None  # the loop passes the same weights every step: check once

    def __call__(self, log_probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if weights is not self._weights:
            if (weights < 0).any():
                raise ValueError("linear interpolation needs non-negative weights; use log_linear for negative ones")
            totals = weights.sum(dim=1, keepdim=True)
            if (totals <= 0).any():
                raise ValueError("every row needs at least one member with a positive weight")
            # A zero weight gives log w = -inf: that member drops out of the logsumexp.
            self._weights, self._log_w = weights, torch.log(weights / totals).T[:, :, None].to(log_probs.dtype)
        return torch.logsumexp(log_probs + self._log_w, dim=0)


class LogLinearCombiner:
    def __init__(self, normalize: bool = True):
        self.normalize = normalize  # False: Marian-style unnormalised weighted sum

    def __call__(self, log_probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        w = weights.T[:, :, None].to(log_probs.dtype)
        # A zero weight must contribute exactly 0, also where log p = -inf (0 * -inf is NaN).
        terms = torch.where(w == 0, torch.zeros_like(log_probs), w * log_probs)
        scores = terms.sum(dim=0)
        return torch.log_softmax(scores, dim=-1) if self.normalize else scores


# name -> a class (or factory) whose no-argument call makes a Combiner; group "cascadekit.combiners" adds more.
COMBINERS: Registry[Callable[[], Combiner]] = Registry("combiner", "cascadekit.combiners", {
    "linear": "stages.methods.ensembling.combiners:LinearCombiner",
    "log_linear": "stages.methods.ensembling.combiners:LogLinearCombiner",
}, check=callable, error=ValueError)


def make_combiner(name_or_combiner: str | Combiner) -> Combiner:
    if not isinstance(name_or_combiner, str):
        return name_or_combiner
    return COMBINERS.load(name_or_combiner)()
