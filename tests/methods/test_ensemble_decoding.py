"""Token-level ensemble decoding against references: HF `generate`, uncached recomputation, a naive ensemble."""

import pytest
import torch

from stages.methods.ensembling import EnsembleOptions, Ensemble, EnsembleConfig, MemberSpec, ensemble_generate, load_member
from stages.testing.tiny_checkpoints import GPT2_MEMBER, MARIAN_MEMBER, save_gpt2, save_marian
from stages.testing.tiny_tokenizers import bpe_tokenizer
from tests.ensemble_fixtures import one_torch_thread, marians  # noqa: F401  (fixtures)

SOURCES = ["the cat sat on the mat", "a dog", "green tree near the river today"]






@pytest.fixture(scope="module")
def gpt2s(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpt2")
    tok = bpe_tokenizer("byte_level", 300)
    return [load_member(save_gpt2(root / f"g{i}", tok, seed=i, **GPT2_MEMBER), device="cpu") for i in range(3)]


def _hf_rows(member, kwargs):
    """`generate`'s output for SOURCES, the prompt part cut off."""
    if member.is_encoder_decoder:
        enc = member.tokenizer(SOURCES, padding=True, return_tensors="pt")
        prompt_len = 1
    else:
        enc = member.tokenizer(SOURCES, padding=True, padding_side="left", return_tensors="pt")
        prompt_len = enc["input_ids"].shape[1]
    out = member.model.generate(**enc, **kwargs, return_dict_in_generate=True, output_scores=True)
    return out.sequences[:, prompt_len:].tolist(), out.get("sequences_scores")


def _assert_same_as_generate(member, nbest, kwargs):
    rows, scores = _hf_rows(member, kwargs)
    per_input = len(nbest[0])
    fill = {member.model.generation_config.pad_token_id, *([member.model.generation_config.eos_token_id])}
    for i, hyps in enumerate(nbest):
        for j, hyp in enumerate(hyps):
            row = rows[i * per_input + j]
            n = len(hyp.token_ids)
            assert row[:n] == hyp.token_ids
            assert set(row[n:]) <= fill  # `generate` pads shorter rows
            if scores is not None:
                assert hyp.score == pytest.approx(float(scores[i * per_input + j]), abs=1e-5)


GRID = [(beams, stop, lp) for beams in (1, 3) for stop in (False, True, "never") for lp in (1.0, 0.0, 2.0)
        if beams > 1 or (stop is False and lp == 1.0)]


@pytest.mark.parametrize("beams,early_stopping,length_penalty", GRID)
def test_one_member_equals_generate_seq2seq(marians, beams, early_stopping, length_penalty):
    kwargs = dict(num_beams=beams, max_new_tokens=12, early_stopping=early_stopping, length_penalty=length_penalty,
                  num_return_sequences=min(beams, 2))
    nbest = ensemble_generate(marians[:1], SOURCES, **kwargs)
    _assert_same_as_generate(marians[0], nbest, kwargs)


@pytest.mark.parametrize("beams,early_stopping,length_penalty", GRID)
def test_one_member_equals_generate_causal_left_padded(gpt2s, beams, early_stopping, length_penalty):
    kwargs = dict(num_beams=beams, max_new_tokens=12, early_stopping=early_stopping, length_penalty=length_penalty,
                  num_return_sequences=min(beams, 2), pad_token_id=0)
    nbest = ensemble_generate(gpt2s[:1], SOURCES, **kwargs)
    _assert_same_as_generate(gpt2s[0], nbest, kwargs)


def test_generate_outputs_are_varied_enough_to_test_anything(marians, gpt2s):
    lengths = {len(h.token_ids) for m in (marians[0], gpt2s[0])
               for nbest in ensemble_generate([m], SOURCES, num_beams=3, num_return_sequences=3, max_new_tokens=12,
                                              length_penalty=0.0, early_stopping=True)
               for h in nbest}
    assert len(lengths) >= 3  # finished at different steps: EOS handling is exercised


@pytest.mark.parametrize("beams", [1, 3])
def test_one_member_equals_generate_with_length_rules_and_forced_tokens(marians, beams):
    kwargs = dict(num_beams=beams, max_new_tokens=9, min_new_tokens=4, forced_bos_token_id=7,
                  suppress_tokens=[5, 6], begin_suppress_tokens=[8, 9], num_return_sequences=1)
    nbest = ensemble_generate(marians[:1], SOURCES, **kwargs)
    assert all(h.token_ids[0] == 7 and len(h.token_ids) >= 5 for hyps in nbest for h in hyps)
    _assert_same_as_generate(marians[0], nbest, kwargs)


def test_options_default_to_the_models_generation_config(marians):
    member = marians[0]
    member.model.generation_config.num_beams = 3
    member.model.generation_config.max_length = 10
    try:
        nbest = ensemble_generate([member], SOURCES)
        _assert_same_as_generate(member, nbest, {})
        assert EnsembleOptions.from_generation_config(member.model.generation_config).num_beams == 3
    finally:
        member.model.generation_config.num_beams = None
        member.model.generation_config.max_length = None


def test_unsupported_generation_settings_are_refused(marians):
    with pytest.raises(ValueError, match="repetition_penalty"):
        EnsembleOptions.from_generation_config(type(marians[0].model.generation_config)(repetition_penalty=1.2))


def test_one_member_log_linear_gives_the_same_sequences(marians):
    kwargs = dict(num_beams=3, max_new_tokens=12, num_return_sequences=2)
    linear = ensemble_generate(marians[:1], SOURCES, combiner="linear", **kwargs)
    log_linear = ensemble_generate(marians[:1], SOURCES, combiner="log_linear", **kwargs)
    assert [[h.token_ids for h in n] for n in linear] == [[h.token_ids for h in n] for n in log_linear]


@pytest.mark.parametrize("family", ["marians", "gpt2s"])
@pytest.mark.parametrize("combiner", ["linear", "log_linear"])
@pytest.mark.parametrize("beams", [1, 3])
def test_cached_equals_uncached_recomputation(request, family, combiner, beams):
    members = request.getfixturevalue(family)
    kwargs = dict(num_beams=beams, max_new_tokens=15, num_return_sequences=min(beams, 2), combiner=combiner,
                  weights=[0.5, 0.3, 0.2], pad_token_id=0)
    cached = ensemble_generate(members, SOURCES, **kwargs)
    uncached = ensemble_generate(members, SOURCES, use_cache=False, **kwargs)
    for a, b in zip(cached, uncached):
        assert [h.token_ids for h in a] == [h.token_ids for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)


@torch.no_grad()
def _naive_greedy_linear(members, weights, source, max_new):
    """Reference: full-prefix forward of every member, mixture in probability space, float64."""
    start = members[0].model.generation_config.decoder_start_token_id
    enc = members[0].tokenizer([source], return_tensors="pt")
    prefix = [start]
    w = torch.tensor(weights, dtype=torch.float64) / sum(weights)
    for step in range(max_new):
        probs = sum(w[i] * torch.softmax(m.model(**enc, decoder_input_ids=torch.tensor([prefix])).logits[0, -1]
                                          .double(), -1) for i, m in enumerate(members))
        if step == max_new - 1:  # the tiny Marians force EOS at the last step
            return prefix[1:] + [1]
        token = int(torch.argmax(probs))
        prefix.append(token)
        if token == 1:
            break
    return prefix[1:]


def test_three_member_linear_greedy_matches_a_naive_ensemble(marians):
    weights = [0.5, 0.3, 0.2]
    nbest = ensemble_generate(marians, SOURCES, weights=weights, max_new_tokens=12)
    for source, hyps in zip(SOURCES, nbest):
        assert hyps[0].token_ids == _naive_greedy_linear(marians, weights, source, 12)


def test_zero_weight_member_is_not_run(marians):
    calls = []
    original = marians[2].model.forward
    marians[2].model.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        with_zero = ensemble_generate(marians, SOURCES, weights=[0.7, 0.3, 0.0], num_beams=2, max_new_tokens=8)
    finally:
        del marians[2].model.forward
    without = ensemble_generate(marians[:2], SOURCES, weights=[0.7, 0.3], num_beams=2, max_new_tokens=8)
    assert calls == []
    assert [[h.token_ids for h in n] for n in with_zero] == [[h.token_ids for h in n] for n in without]


def test_members_with_different_vocabularies_are_refused(marians, gpt2s):
    with pytest.raises(ValueError, match="different vocabularies"):
        ensemble_generate([marians[0], gpt2s[0]], SOURCES)


def test_ensemble_from_config_loads_members_from_local_dirs(marians, tmp_path):
    tok = bpe_tokenizer("metaspace", 120)
    specs = [MemberSpec(path=str(save_marian(tmp_path / f"m{i}", tok, seed=i, **MARIAN_MEMBER)), weight=w,
                        device="cpu")
             for i, w in ((0, 0.5), (1, 0.3), (2, 0.2))]
    ensemble = Ensemble.from_config(EnsembleConfig(members=specs, decoding={"num_beams": 3, "max_new_tokens": 10}))
    direct = ensemble_generate(marians, SOURCES, weights=[0.5, 0.3, 0.2], num_beams=3, max_new_tokens=10)
    assert [[h.token_ids for h in n] for n in ensemble.generate(SOURCES)] == [[h.token_ids for h in n] for n in direct]
    assert all(isinstance(h.text, str) for n in direct for h in n)
    with pytest.raises(ValueError, match="unknown decoding options"):
        EnsembleConfig(members=specs, decoding={"beam_size": 3})


def test_seq2seq_and_causal_members_sharing_a_vocabulary_mix(marians, tmp_path):
    # A causal LM over the same vocabulary (shallow-fusion style); lengths follow the first member.
    lm = load_member(save_gpt2(tmp_path / "lm", marians[0].tokenizer, seed=5, **GPT2_MEMBER), device="cpu")
    kwargs = dict(weights=[0.7, 0.3], num_beams=2, max_new_tokens=10, pad_token_id=0)
    cached = ensemble_generate([marians[0], lm], SOURCES, **kwargs)
    uncached = ensemble_generate([marians[0], lm], SOURCES, use_cache=False, **kwargs)
    assert [[h.token_ids for h in n] for n in cached] == [[h.token_ids for h in n] for n in uncached]
    alone = ensemble_generate([marians[0]], SOURCES, num_beams=2, max_new_tokens=10)
    assert [h.score for n in cached for h in n] != pytest.approx([h.score for n in alone for h in n], abs=1e-3)
