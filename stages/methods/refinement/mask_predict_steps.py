"""Mask-Predict decoding (Ghazvininejad et al. 2019) for a CMLM, as a step of the refinement loop.

    iteration 0   predict the ℓ most likely target lengths; for each, predict
                  every token from an all-[MASK] target
    iteration t   (t = 1 … T-1) re-mask the n = ⌊N·(T−t)/T⌋ lowest-confidence
                  tokens of each candidate (N = its length) and re-predict
                  them; only those tokens and their probabilities change
    output        the candidate with the best mean log-prob

Every iteration runs the decoder once over all candidates of all active items;
the source is encoded once per batch of items.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from stages.methods.refinement.refine_loop import ItemState, refine_loop


def remask_count(lengths: torch.Tensor, t: int, T: int) -> torch.Tensor:
    """n = ⌊N·(T−t)/T⌋ per candidate, in exact integer arithmetic."""
    return (lengths * (T - t)) // T


def lowest_confidence(log_probs: torch.Tensor, lengths: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Bool mask [R, L] of the n[r] lowest log-probs among the first lengths[r] positions of each row."""
    R, L = log_probs.shape
    valid = torch.arange(L, device=log_probs.device)[None, :] < lengths[:, None]
    keyed = log_probs.masked_fill(~valid, float("inf"))
    order = torch.sort(keyed, dim=1, stable=True).indices  # stable: ties resolved by position
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(L, device=log_probs.device).expand(R, L))
    return (rank < n[:, None]) & valid


@dataclass
class Candidates:
    """One item's working state: ℓ length candidates."""

    lengths: torch.Tensor  # [ℓ]
    tokens: torch.Tensor  # [ℓ, L], pad beyond each length
    log_probs: torch.Tensor  # [ℓ, L], +inf beyond each length
    masked: torch.Tensor  # [ℓ, L] positions re-predicted in the latest iteration
    states: torch.Tensor  # [S, d] encoder states
    source_pad: torch.Tensor  # [S]


class MaskPredictStep:
    """The loop's `step` for a CMLM (see cmlm.py: `encode`, `predict_length`, `decode`)."""

    def __init__(self, model, tokenizer, iterations: int = 10, length_beam: int = 3, max_length: int | None = None,
                 batch_size: int = 64):
        self.model, self.tok = model, tokenizer
        self.T, self.beam, self.batch_size = iterations, length_beam, batch_size
        c = model.config
        self.max_length = min(max_length or c.max_target_length, c.max_target_length)
        self.pad, self.mask = c.pad_token_id, c.mask_token_id
        banned = {i for i in tokenizer.all_special_ids if i is not None and i < c.vocab_size}
        self.banned = torch.tensor(sorted(banned), dtype=torch.long)  # never predicted: pad, EOS, unk, ...

    @torch.no_grad()
    def __call__(self, states: list[ItemState], iteration: int) -> None:
        for b in range(0, len(states), self.batch_size):
            chunk = states[b:b + self.batch_size]
            if iteration == 0:
                self._start(chunk)
            self._iterate(chunk, iteration)

    def _start(self, states: list[ItemState]) -> None:
        """Encode the sources and open ℓ all-[MASK] candidates per item."""
        dev = self.model.device
        max_src = self.model.config.max_source_positions
        enc = self.tok([s.input for s in states], return_tensors="pt", padding=True, truncation=True,
                       max_length=max_src)["input_ids"].to(dev)
        enc_states, pad = self.model.encode(enc)
        length_logits = self.model.predict_length(enc_states, pad).float()
        length_logits[:, 0] = float("-inf")  # at least one token
        length_logits[:, self.max_length + 1:] = float("-inf")
        beam = min(self.beam, self.max_length)
        top = length_logits.topk(beam, dim=-1).indices  # [B, ℓ], most likely length first
        for i, s in enumerate(states):
            lengths = top[i]
            width = int(lengths.max())
            valid = torch.arange(width, device=dev)[None, :] < lengths[:, None]
            s.memory = Candidates(
                lengths=lengths,
                tokens=torch.where(valid, self.mask, self.pad),
                log_probs=torch.full((beam, width), float("-inf"), device=dev).masked_fill(~valid, float("inf")),
                masked=valid.clone(),
                states=enc_states[i][~pad[i]], source_pad=pad[i][~pad[i]])

    def _iterate(self, states: list[ItemState], iteration: int) -> None:
        mems: list[Candidates] = [s.memory for s in states]
        if iteration > 0:  # choose what to re-mask; iteration 0 starts with everything masked
            for m in mems:
                n = remask_count(m.lengths, iteration, self.T)
                m.masked = lowest_confidence(m.log_probs, m.lengths, n)
                m.tokens = m.tokens.masked_fill(m.masked, self.mask)
        if any(bool(m.masked.any()) for m in mems):
            self._predict(mems)
        for s, m in zip(states, mems):
            valid = m.log_probs != float("inf")
            mean = torch.where(valid, m.log_probs, 0.0).sum(-1) / m.lengths
            best = int(mean.argmax())
            n_best = int(m.lengths[best])
            s.output = self.tok.decode(m.tokens[best, :n_best].tolist(), skip_special_tokens=True).strip()
            s.score = float(mean[best])
            s.info = {"length": n_best, "lengths": m.lengths.tolist(), "masked": m.masked.sum(-1).tolist()}

    def _predict(self, mems: list[Candidates]) -> None:
        """One decoder pass over every candidate row; update tokens/log-probs at masked positions only."""
        dev = self.model.device
        rows = sum(len(m.lengths) for m in mems)
        width = max(m.tokens.shape[1] for m in mems)
        src_width = max(m.states.shape[0] for m in mems)
        d = mems[0].states.shape[-1]
        tokens = torch.full((rows, width), self.pad, dtype=torch.long, device=dev)
        states = torch.zeros(rows, src_width, d, dtype=mems[0].states.dtype, device=dev)
        source_pad = torch.ones(rows, src_width, dtype=torch.bool, device=dev)
        r = 0
        for m in mems:
            k, w, s = len(m.lengths), m.tokens.shape[1], m.states.shape[0]
            tokens[r:r + k, :w] = m.tokens
            states[r:r + k, :s] = m.states
            source_pad[r:r + k, :s] = False
            r += k
        logits = self.model.decode(tokens, states, source_pad).float()
        logits[..., self.banned.to(dev)] = float("-inf")
        best_logp, best_tok = torch.log_softmax(logits, -1).max(-1)
        r = 0
        for m in mems:
            k, w = len(m.lengths), m.tokens.shape[1]
            m.tokens = torch.where(m.masked, best_tok[r:r + k, :w], m.tokens)
            m.log_probs = torch.where(m.masked, best_logp[r:r + k, :w], m.log_probs)
            r += k


def mask_predict(model, tokenizer, sources: list[str], iterations: int = 10, length_beam: int = 3,
                 max_length: int | None = None, stop_when_unchanged: bool = False) -> list[ItemState]:
    """Decode `sources` with T = `iterations`; each state's trace holds every iteration's best candidate."""
    step = MaskPredictStep(model, tokenizer, iterations, length_beam, max_length)
    return refine_loop(sources, step, iterations, stop_when_unchanged=stop_when_unchanged)
