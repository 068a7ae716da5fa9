"""Token-level ensemble decoding: one loop, pluggable parts.

    sessions  one per member with a non-zero weight (own KV cache, own device)
    combiner  members' log-probs -> one distribution      (combiners.py)
    filters   edit the combined log-probs (min length, forced BOS/EOS, bans)
    selector  greedy or beam search, with a length penalty / stopping rule

Each step every session returns its next-token log-probs, these are moved
to one device and combined, the filters run, the selector picks tokens and
tells the sessions how to reorder their caches. Members must share a
vocabulary (see union_vocab.py otherwise). A one-member ensemble returns
exactly what that model's `generate` returns for greedy and beam search.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from pydantic import BaseModel, ConfigDict, field_validator

from stages.methods.ensembling.combiners import Combiner, make_combiner
from stages.methods.ensembling.logit_filters import LogitFilter, default_filters
from stages.methods.ensembling.ensemble_members import Member, MemberSpec, check_shared_vocabulary, load_members
from stages.methods.ensembling.ensemble_options import EnsembleOptions, Lengths, resolve_lengths
from stages.methods.ensembling.token_search import BeamSearch, GreedySearch, BeamHypothesis, LengthPenalty, PowerLengthPenalty, Selector
from stages.methods.ensembling.member_sessions import MemberSession, open_session


def weight_matrix(weights, batch_size: int, n_members: int) -> torch.Tensor:
    """None -> uniform; [M] -> the same for every input; [B, M] -> one vector per input."""
    if weights is None:
        return torch.ones(batch_size, n_members)
    w = torch.as_tensor(weights, dtype=torch.float32).detach().cpu()
    if w.dim() == 1:
        w = w[None, :].expand(batch_size, -1)
    if tuple(w.shape) != (batch_size, n_members):
        raise ValueError(f"weights of shape {tuple(w.shape)} do not fit {batch_size} inputs x {n_members} members")
    return w


def resolve_options(options: EnsembleOptions | None, first: Member, overrides: dict) -> EnsembleOptions:
    """Fill unset token ids from the first member, as `generate` would from its generation config."""
    if options is None:
        options = EnsembleOptions.from_generation_config(first.model.generation_config, **overrides)
    elif overrides:
        options = EnsembleOptions(**{**options.model_dump(), **overrides})  # validated, unlike model_copy
    gc, cfg = first.model.generation_config, first.model.config
    eos = options.eos_token_ids
    if eos is None:
        raw = gc.eos_token_id if gc.eos_token_id is not None else cfg.eos_token_id
        eos = () if raw is None else ((raw,) if isinstance(raw, int) else tuple(raw))
    pad = options.pad_token_id
    if pad is None:
        pad = gc.pad_token_id if gc.pad_token_id is not None else (eos[0] if eos else 0)
    return options.model_copy(update={"eos_token_ids": eos, "pad_token_id": pad})


def decoder_start_for(member: Member, options: EnsembleOptions) -> int | None:
    if options.decoder_start_token_id is not None:
        return options.decoder_start_token_id
    for source in (member.model.generation_config, member.model.config):
        for name in ("decoder_start_token_id", "bos_token_id"):
            if getattr(source, name, None) is not None:
                return getattr(source, name)
    return None


def make_selector(options: EnsembleOptions, batch_size: int, lengths: Lengths, device: torch.device,
                  length_penalty: LengthPenalty | None = None) -> Selector:
    penalty = length_penalty or PowerLengthPenalty(options.length_penalty)
    eos, pad = options.eos_token_ids or (), options.pad_token_id
    if options.num_beams == 1:
        if options.num_return_sequences != 1:
            raise ValueError("greedy search returns one sequence per input; use num_beams >= num_return_sequences")
        return GreedySearch(batch_size, lengths.max_new, eos, pad, penalty, device)
    return BeamSearch(batch_size, options.num_beams, lengths.max_new, eos, pad, penalty, options.early_stopping,
                      options.num_return_sequences, device)


@torch.no_grad()
def ensemble_generate(
    members: Sequence[Member],
    sources: Sequence[str],
    options: EnsembleOptions | None = None,
    *,
    weights=None,
    combiner: str | Combiner = "linear",
    filters: Sequence[LogitFilter] | None = None,
    penalty: LengthPenalty | None = None,
    device: torch.device | str | None = None,
    check_vocab: bool = True,
    **overrides,
) -> list[list[BeamHypothesis]]:
    """Decode `sources` with the members' combined distribution; returns an n-best list per source.

    `weights`: None (uniform), [M] or [B, M]; members whose weight is zero
    for every source are never run. `overrides` are EnsembleOptions fields
    (applied over `options`, or over the first member's generation config).
    `filters` replaces the default logit filters; `penalty` replaces the
    power length penalty (e.g. GNMTLengthPenalty); `device` is where the
    distributions are combined (default: the first member's device).
    """
    sources = list(sources)
    w = weight_matrix(weights, len(sources), len(members))
    active = [m for m in range(len(members)) if bool((w[:, m] != 0).any())]
    if not active:
        raise ValueError("every member has weight zero")
    members = [members[m] for m in active]
    w = w[:, active]
    if check_vocab:
        check_shared_vocabulary(members)
    options = resolve_options(options, members[0], overrides)
    rows = options.num_beams
    sessions = [open_session(m, sources, rows, options.use_cache, decoder_start_for(m, options)) for m in members]
    device = torch.device(device) if device is not None else members[0].device
    lengths = resolve_lengths(options, sessions[0].prompt_len)
    selector = make_selector(options, len(sources), lengths, device, penalty)
    filters = default_filters(options, lengths) if filters is None else list(filters)
    row_weights = w.repeat_interleave(rows, dim=0).to(device)
    hypotheses = decode_loop(sessions, selector, make_combiner(combiner), filters, row_weights, device)
    tokenizer = members[0].tokenizer
    for nbest in hypotheses:
        for hyp in nbest:
            hyp.text = tokenizer.decode(hyp.token_ids, skip_special_tokens=True)
    return hypotheses


def decode_loop(sessions: Sequence[MemberSession], selector: Selector, combiner: Combiner,
                filters: Sequence[LogitFilter], row_weights: torch.Tensor, device: torch.device
                ) -> list[list[BeamHypothesis]]:
    """The loop itself: ask members, combine, filter, select, reorder caches."""
    while not selector.finished:
        generated = selector.generated
        member_log_probs = [s.next_log_probs(generated).to(device) for s in sessions]
        if len({lp.shape[-1] for lp in member_log_probs}) != 1:
            sizes = {s.member.name: lp.shape[-1] for s, lp in zip(sessions, member_log_probs)}
            raise ValueError(f"members disagree on the output vocabulary size: {sizes}")
        log_probs = combiner(torch.stack(member_log_probs), row_weights)
        for rule in filters:
            log_probs = rule(log_probs, generated)
        order = selector.step(log_probs)
        if order is not None:
            for session in sessions:
                session.reorder(order)
    return selector.finalize()


class EnsembleConfig(BaseModel):
    """A loadable ensemble: members on disk, their weights, the combiner, decoding overrides."""

    model_config = ConfigDict(extra="forbid")

    members: list[MemberSpec]
    combiner: str = "linear"
    # EnsembleOptions fields applied over the first member's generation config (as `generate(**kwargs)` does).
    decoding: dict[str, Any] = {}

    @field_validator("decoding")
    @classmethod
    def _known_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = set(value) - set(EnsembleOptions.model_fields)
        if unknown:
            known = sorted(EnsembleOptions.model_fields)
            raise ValueError(f"unknown decoding options {sorted(unknown)}; known: {known}")
        return value


class Ensemble:
    """Members + fixed weights + a combiner; `generate` decodes a batch of sources."""

    def __init__(self, members: Sequence[Member], weights: Sequence[float] | None = None,
                 combiner: str | Combiner = "linear", decoding: dict[str, Any] | None = None):
        self.members = list(members)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.members)
        self.combiner = combiner
        self.decoding = dict(decoding or {})
        check_shared_vocabulary(self.members)

    @classmethod
    def from_config(cls, config: EnsembleConfig) -> "Ensemble":
        members = load_members(config.members)
        return cls(members, [s.weight for s in config.members], config.combiner, config.decoding)

    def generate(self, sources: Sequence[str], options: EnsembleOptions | None = None, weights=None,
                 **overrides) -> list[list[BeamHypothesis]]:
        """`options` replaces everything; otherwise `overrides` go over the stored decoding overrides."""
        extra = {} if options is not None else {**self.decoding, **overrides}
        return ensemble_generate(self.members, sources, options, weights=self.weights if weights is None else weights,
                                 combiner=self.combiner, check_vocab=False, **extra)
