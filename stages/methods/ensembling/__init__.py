"""Ensemble decoding: token-level (shared vocabulary), routed, cross-vocabulary, and sequence-level.

    from stages.methods.ensembling import load_member, ensemble_generate
    members = [load_member(d) for d in ("runs/mt-a", "runs/mt-b")]
    nbest = ensemble_generate(members, ["ein Satz"], num_beams=4, weights=[0.6, 0.4])

Modules: ensemble_decoding (the loop), member_sessions (per-member KV caches),
combiners, logit_filters, token_search (greedy / beam / length penalties),
ensemble_options, ensemble_members, forced_scoring, member_router, union_vocab,
nbest_rerank. Tiny test members: stages.testing.tiny_checkpoints (MARIAN_MEMBER).
"""

from stages.methods.ensembling.combiners import COMBINERS, LinearCombiner, LogLinearCombiner, make_combiner
from stages.methods.ensembling.ensemble_decoding import Ensemble, EnsembleConfig, ensemble_generate
from stages.methods.ensembling.ensemble_members import Member, MemberSpec, default_device, load_member, load_members
from stages.methods.ensembling.ensemble_options import EnsembleOptions
from stages.methods.ensembling.nbest_rerank import MBRResult, ScoredCandidate, mbr_select, pool_nbest, rerank
from stages.methods.ensembling.member_router import MemberRouter, RouterConfig, routed_generate, train_router
from stages.methods.ensembling.token_search import BeamSearch, GNMTLengthPenalty, GreedySearch, BeamHypothesis, PowerLengthPenalty
from stages.methods.ensembling.union_vocab import HFVocabMember, UnionResult, union_generate, union_generate_members

__all__ = [
    "COMBINERS", "LinearCombiner", "LogLinearCombiner", "make_combiner",
    "Ensemble", "EnsembleConfig", "ensemble_generate",
    "Member", "MemberSpec", "default_device", "load_member", "load_members",
    "EnsembleOptions",
    "MBRResult", "ScoredCandidate", "mbr_select", "pool_nbest", "rerank",
    "MemberRouter", "RouterConfig", "routed_generate", "train_router",
    "BeamSearch", "GNMTLengthPenalty", "GreedySearch", "BeamHypothesis", "PowerLengthPenalty",
    "HFVocabMember", "UnionResult", "union_generate", "union_generate_members",
]
