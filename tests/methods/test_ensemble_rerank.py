"""Sequence-level combination: forced-decoding scores, n-best reranking, MBR."""

import pytest
import torch

from stages.methods.ensembling import ensemble_generate, load_member, mbr_select, pool_nbest, rerank
from stages.methods.ensembling.forced_scoring import sequence_logprobs, token_logprobs
from stages.testing.tiny_checkpoints import GPT2_MEMBER, MARIAN_MEMBER, save_gpt2, save_marian
from stages.testing.tiny_tokenizers import bpe_tokenizer
from tests.ensemble_fixtures import one_torch_thread  # noqa: F401  (fixtures)

SOURCES = ["the cat sat on the mat", "a dog"]
CANDIDATES = [["the cat sat", "a cat on the mat", "dog"], ["a dog ran", "the big dog", "dog dog"]]




@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerank")
    meta, byte = bpe_tokenizer("metaspace", 120), bpe_tokenizer("byte_level", 300)
    return [load_member(save_marian(root / "m0", meta, seed=0, **MARIAN_MEMBER), device="cpu"),
            load_member(save_marian(root / "m1", meta, seed=1, **MARIAN_MEMBER), device="cpu"),
            load_member(save_gpt2(root / "g", byte, seed=2, **GPT2_MEMBER), device="cpu")]


@torch.no_grad()
def _mean_token_logprob_by_hf_loss(member, source, target):
    """Independent reference: transformers' own label loss is the mean token NLL."""
    tok = member.tokenizer
    if member.is_encoder_decoder:
        enc = tok([source], return_tensors="pt")
        labels = tok(text_target=[target], return_tensors="pt")["input_ids"]
        return -float(member.model(**enc, labels=labels).loss)
    prompt = tok([source])["input_ids"][0]
    target_ids = tok([target], add_special_tokens=False)["input_ids"][0] + [tok.eos_token_id]
    ids = torch.tensor([prompt + target_ids])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100
    return -float(member.model(input_ids=ids, labels=labels).loss)


@pytest.mark.parametrize("which", [0, 2])
def test_batched_forced_decoding_matches_the_models_own_loss(members, which):
    member = members[which]
    flat_src = [s for s, c in zip(SOURCES, CANDIDATES) for _ in c]
    flat_tgt = [t for c in CANDIDATES for t in c]
    total, count = sequence_logprobs(member, flat_src, flat_tgt)
    for i, (s, t) in enumerate(zip(flat_src, flat_tgt)):
        assert float(total[i] / count[i]) == pytest.approx(_mean_token_logprob_by_hf_loss(member, s, t), abs=1e-5)


def test_forced_decoding_reproduces_the_greedy_search_logprob(members):
    member = members[0]
    hyp = ensemble_generate([member], ["a dog"], max_new_tokens=6, min_new_tokens=3, forced_eos_token_id=None)[0][0]
    lp, mask, ids = token_logprobs(member, ["a dog"], [hyp.token_ids])
    assert ids[0][mask[0]].tolist() == hyp.token_ids
    assert float(lp.sum()) == pytest.approx(hyp.logprob, abs=1e-4)


def test_rerank_orders_pooled_candidates_by_mean_normalised_logprob(members):
    ranked = rerank(members, SOURCES, CANDIDATES, weights=[2.0, 1.0, 1.0])
    for source, cands, result in zip(SOURCES, CANDIDATES, ranked):
        expected = {c: (2 * _mean_token_logprob_by_hf_loss(members[0], source, c)
                        + _mean_token_logprob_by_hf_loss(members[1], source, c)
                        + _mean_token_logprob_by_hf_loss(members[2], source, c)) / 4 for c in cands}
        assert [r.text for r in result] == sorted(cands, key=expected.get, reverse=True)
        assert [r.score for r in result] == pytest.approx([expected[r.text] for r in result], abs=1e-5)
        assert len(result[0].member_scores) == 3


def test_pool_nbest_keeps_each_text_once_in_first_seen_order(members):
    a = ensemble_generate(members[:1], SOURCES, num_beams=3, num_return_sequences=3, max_new_tokens=5)
    b = [["x", "y"], ["z"]]
    pooled = pool_nbest(a, b)
    assert pooled[0] == list(dict.fromkeys([h.text for h in a[0]] + ["x", "y"]))
    assert pooled[1][-1] == "z"


@pytest.mark.parametrize("utility", ["bleu", "chrf"])
def test_mbr_picks_the_consensus_candidate(utility):
    # The centre differs from each variant by one word; the variants differ from each other by two.
    candidates = ["a cat sat on the mat",
                  "the cat sat on the mat",
                  "the dog sat on the mat",
                  "the cat lay on the mat",
                  "the cat sat on the rug",
                  "dogs bark loudly at night"]
    result = mbr_select(candidates, utility)
    assert result.best == "the cat sat on the mat"
    assert min(range(6), key=lambda i: result.expected_utility[i]) == 5  # the outlier is least supported


def test_mbr_weights_shift_the_choice():
    # With all mass on one pseudo-reference, the candidate closest to it wins.
    candidates = ["red car", "red car fast", "blue boat"]
    assert mbr_select(candidates, "chrf", weights=[0.0, 0.0, 1.0]).best != "blue boat"
    assert mbr_select(candidates, "chrf", weights=[0.0, 1.0, 0.0]).best == "red car"
