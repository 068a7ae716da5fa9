"""Ensemble decoding: token-level (shared vocabulary), routed, cross-vocabulary, and sequence-level.

    from stages.ensemble import load_member, ensemble_generate
    members = [load_member(d) for d in ("runs/mt-a", "runs/mt-b")]
    nbest = ensemble_generate(members, ["ein Satz"], num_beams=4, weights=[0.6, 0.4])

Modules: decoding (the loop), sessions (per-member KV caches), combiners,
filters, search (greedy / beam / length penalties), options, members,
scoring (forced decoding), router, union_vocab, rerank, tiny (test models).
"""

from .combiners import COMBINERS, LinearCombiner, LogLinearCombiner, make_combiner
from .decoding import Ensemble, EnsembleConfig, ensemble_generate
from .members import Member, MemberSpec, default_device, load_member, load_members
from .options import DecodingOptions
from .rerank import MBRResult, ScoredCandidate, mbr_select, pool_nbest, rerank
from .router import Router, RouterConfig, routed_generate, train_router
from .search import BeamSearch, GNMTLengthPenalty, GreedySearch, Hypothesis, PowerLengthPenalty
from .union_vocab import HFVocabMember, UnionResult, union_generate, union_generate_members

__all__ = [
    "COMBINERS", "LinearCombiner", "LogLinearCombiner", "make_combiner",
    "Ensemble", "EnsembleConfig", "ensemble_generate",
    "Member", "MemberSpec", "default_device", "load_member", "load_members",
    "DecodingOptions",
    "MBRResult", "ScoredCandidate", "mbr_select", "pool_nbest", "rerank",
    "Router", "RouterConfig", "routed_generate", "train_router",
    "BeamSearch", "GNMTLengthPenalty", "GreedySearch", "Hypothesis", "PowerLengthPenalty",
    "HFVocabMember", "UnionResult", "union_generate", "union_generate_members",
]
