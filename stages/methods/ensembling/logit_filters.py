"""Logit filters: small rules that edit the combined next-token log-probs.

Each filter is a callable `(log_probs [rows, vocab], generated [rows, t]) ->
log_probs`, applied after the members are combined, in the order `generate`
applies its processors, so a one-member ensemble sees the same scores.
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence

import torch

from stages.methods.ensembling.ensemble_options import EnsembleOptions, Lengths


class LogitFilter(Protocol):
    def __call__(self, log_probs: torch.Tensor, generated: torch.Tensor) -> torch.Tensor: ...


class SuppressTokens:
    """Never emit these tokens (`suppress_tokens`, single-token `bad_words_ids`)."""

    def __init__(self, token_ids: Sequence[int], at_step: int | None = None):
        self.token_ids = list(token_ids)
        self.at_step = at_step  # None: every step; else only at that generated-token count

    def __call__(self, log_probs: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        if self.at_step is not None and generated.shape[1] != self.at_step:
            return log_probs
        log_probs = log_probs.clone()
        log_probs[:, self.token_ids] = -math.inf
        return log_probs


class MinNewTokens:
    """Forbid EOS until `min_new` tokens were generated."""

    def __init__(self, min_new: int, eos_token_ids: Sequence[int]):
        self.min_new = min_new
        self.eos_token_ids = list(eos_token_ids)

    def __call__(self, log_probs: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        if generated.shape[1] >= self.min_new:
            return log_probs
        log_probs = log_probs.clone()
        log_probs[:, self.eos_token_ids] = -math.inf
        return log_probs


class ForceToken:
    """At one step, give all mass to one token (forced BOS / forced EOS)."""

    def __init__(self, token_id: int, at_step: int):
        self.token_id = token_id
        self.at_step = at_step

    def __call__(self, log_probs: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        if generated.shape[1] != self.at_step:
            return log_probs
        forced = torch.full_like(log_probs, -math.inf)
        forced[:, self.token_id] = 0.0
        return forced


def default_filters(options: EnsembleOptions, lengths: Lengths) -> list[LogitFilter]:
    """The filters `generate` would build from these options (same order)."""
    eos = list(options.eos_token_ids or ())
    filters: list[LogitFilter] = []
    single_token_bans = list(options.suppress_tokens)
    if lengths.min_new > 0 and eos:
        filters.append(MinNewTokens(lengths.min_new, eos))
    # `generate` forces BOS only while the whole decoder input is one token long.
    if options.forced_bos_token_id is not None and lengths.prompt_len == 1:
        filters.append(ForceToken(options.forced_bos_token_id, at_step=0))
    if options.forced_eos_token_id is not None:
        filters.append(ForceToken(options.forced_eos_token_id, at_step=lengths.max_new - 1))
    if single_token_bans:
        filters.append(SuppressTokens(single_token_bans))
    if options.begin_suppress_tokens:
        # Like `generate`: the first free step comes after a forced BOS.
        begin = 1 if (options.forced_bos_token_id is not None and lengths.prompt_len == 1) else 0
        filters.append(SuppressTokens(options.begin_suppress_tokens, at_step=begin))
    return filters
