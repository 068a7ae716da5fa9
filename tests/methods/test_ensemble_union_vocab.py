"""Cross-vocabulary (union vocabulary) greedy mixing: a hand-computed example and real tiny models."""

import math

import pytest
import torch

from stages.methods.ensembling import ensemble_generate, load_member
from stages.testing.tiny_checkpoints import GPT2_MEMBER, MARIAN_MEMBER, save_gpt2, save_marian
from stages.testing.tiny_tokenizers import bpe_tokenizer
from stages.methods.ensembling.union_vocab import (EOS, HFVocabMember, UnionVocab, split_piece, token_surfaces, union_generate,
                                         union_generate_members)
from tests.ensemble_fixtures import one_torch_thread  # noqa: F401  (fixtures)




class TableMember:
    """A fake member: next-token probabilities looked up by the exact tokens fed so far."""

    def __init__(self, surfaces, table):
        self.surfaces, self.table = surfaces, table
        self.eos_ids, self.unk_id = {0}, None
        self.rewinds = 0

    def start(self, source):
        self.fed = []

    def feed(self, ids):
        self.fed.extend(ids)

    def rewind_to(self, n):
        if n < len(self.fed):
            self.rewinds += 1
        self.fed = self.fed[:n]

    def log_probs(self):
        return torch.tensor(self.table[tuple(self.fed)], dtype=torch.float64).log()

    def tokenize(self, text):
        return split_piece(text, {s: i for i, s in enumerate(self.surfaces) if s and s != EOS}, None)


#        EOS   " the" " cat" " ca"  "t"  " dog"
A_SURF = [EOS, " the", " cat", " ca", "t", " dog"]
A_TABLE = {(): [0, .6, .1, .1, .1, .1], (1,): [.1, 0, .5, .1, .2, .1], (1, 3): [.1, 0, .05, 0, .8, .05],
           (1, 3, 4): [1, 0, 0, 0, 0, 0], (1, 2): [.7, 0, 0, 0, 0, .3]}
#        EOS   " the" " ca"  "t"  " dog"  "s"
B_SURF = [EOS, " the", " ca", "t", " dog", "s"]
B_TABLE = {(): [0, .2, .1, .1, .5, .1], (1,): [.1, 0, .6, .1, .1, .1], (1, 2): [.1, 0, 0, .9, 0, 0],
           (1, 2, 3): [.9, 0, 0, 0, 0, .1]}


def _pair():
    return TableMember(A_SURF, A_TABLE), TableMember(B_SURF, B_TABLE)


def test_union_vocabulary_maps_each_surface_once():
    union = UnionVocab.build([A_SURF, B_SURF])
    assert union.entries == [EOS, " the", " cat", " ca", "t", " dog", "s"]
    assert union.index[1].tolist() == [0, 1, 3, 4, 5, 6]
    first_step = [torch.tensor(table[()]).log() for table in (A_TABLE, B_TABLE)]
    mixed = 0.5 * union.to_union(0, first_step[0]) + 0.5 * union.to_union(1, first_step[1])
    assert mixed.tolist() == pytest.approx([0, .4, .05, .1, .1, .3, .05])  # by hand


def test_hand_computed_greedy_mix_piece_mode():
    a, b = _pair()
    result = union_generate([a, b], "src", [0.5, 0.5], max_new_tokens=10)
    # step 1: " the" .4 | step 2: " ca" .05+.3=.35 beats " cat" .25 | step 3: "t" .4+.45 | step 4: EOS .5+.45
    assert result.pieces == [" the", " ca", "t"]
    assert result.text == "the cat"
    assert result.logprob == pytest.approx(math.log(.4) + math.log(.35) + math.log(.85) + math.log(.95))
    assert result.fed == [[1, 3, 4], [1, 2, 3]]


def test_hand_computed_greedy_mix_retokenize_mode_rewinds_the_diverging_member():
    a, b = _pair()
    result = union_generate([a, b], "src", [0.5, 0.5], max_new_tokens=10, feed="retokenize")
    # After "t", member A re-reads " the cat" as [" the", " cat"]: it rewinds and conditions on (1, 2).
    assert result.fed == [[1, 2], [1, 2, 3]]
    assert a.rewinds == 1 and b.rewinds == 0
    assert result.logprob == pytest.approx(math.log(.4) + math.log(.35) + math.log(.85) + math.log(.5 * .7 + .5 * .9))


def test_a_surface_missing_from_a_member_is_fed_as_several_of_its_tokens():
    a, b = _pair()
    result = union_generate([a, b], "src", [0.9, 0.1], max_new_tokens=10)
    # step 2: " cat" .45 beats " ca" .09+.06; B has no " cat" and gets " ca" + "t".
    assert result.pieces == [" the", " cat"]
    assert result.fed == [[1, 2], [1, 2, 3]]


def test_surfaces_of_metaspace_and_byte_level_tokenizers():
    meta = bpe_tokenizer("metaspace", 120)
    byte = bpe_tokenizer("byte_level", 400)
    meta_s = token_surfaces(meta, len(meta))
    byte_s = token_surfaces(byte, len(byte))
    assert meta_s[meta.convert_tokens_to_ids("▁the")] == " the"
    assert byte_s[byte.convert_tokens_to_ids("Ġthe")] == " the"
    assert meta_s[meta.eos_token_id] == EOS and byte_s[byte.eos_token_id] == EOS
    assert meta_s[meta.pad_token_id] is None
    assert byte_s[byte.convert_tokens_to_ids("Ã")] is None  # a lone UTF-8 lead byte is not text


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("union")
    meta, meta_big, byte = (bpe_tokenizer("metaspace", 120), bpe_tokenizer("metaspace", 200),
                            bpe_tokenizer("byte_level", 400, seq2seq=False))
    return {
        "m0": load_member(save_marian(root / "m0", meta, seed=0, **MARIAN_MEMBER), device="cpu"),
        "m1": load_member(save_marian(root / "m1", meta, seed=1, **MARIAN_MEMBER), device="cpu"),
        "big": load_member(save_marian(root / "big", meta_big, seed=2, **MARIAN_MEMBER), device="cpu"),
        "gpt": load_member(save_gpt2(root / "gpt", byte, seed=3, **GPT2_MEMBER), device="cpu"),
    }


SOURCES = ["the cat sat on the mat", "a dog ran", "green tree near the river today"]


def test_identical_vocabularies_reduce_to_the_shared_vocabulary_linear_ensemble(members):
    pair = [members["m0"], members["m1"]]
    results = union_generate_members(pair, SOURCES, [0.6, 0.4], max_new_tokens=10)
    for source, result in zip(SOURCES, results):
        # The union leaves special tokens out, so suppress them (and the forced EOS) in the reference.
        ref = ensemble_generate(pair, [source], weights=[0.6, 0.4], max_new_tokens=10, forced_eos_token_id=None,
                                suppress_tokens=[0, 2])[0][0]
        ref_ids = ref.token_ids[:-1] if ref.token_ids[-1:] == [1] else ref.token_ids
        assert result.fed[0] == ref_ids
        assert result.logprob == pytest.approx(ref.logprob, abs=1e-4)


@pytest.mark.parametrize("feed", ["piece", "retokenize"])
def test_different_tokenizers_each_member_is_fed_a_spelling_of_the_text(members, feed):
    mixed = [members["m0"], members["big"], members["gpt"]]
    wrapped = [HFVocabMember(m) for m in mixed]
    for source in SOURCES:
        result = union_generate(wrapped, source, [0.4, 0.3, 0.3], max_new_tokens=8, min_new_tokens=4, feed=feed)
        text = "".join(result.pieces)
        assert len(result.pieces) >= 4
        for member, fed in zip(wrapped, result.fed):
            assert "".join(member.surfaces[i] or "?" for i in fed) == text
            own = member.tokenize(text)
            if feed == "retokenize" and own is not None:
                assert fed == own


def test_rewound_member_equals_a_fresh_member_fed_the_same_tokens(members):
    member = HFVocabMember(members["gpt"])
    member.start("a dog")
    member.feed([40, 41, 42])
    member.log_probs()
    member.rewind_to(1)
    member.feed([50])
    after_rewind = member.log_probs()
    fresh = HFVocabMember(members["gpt"])
    fresh.start("a dog")
    fresh.feed([40, 50])
    prompt = members["gpt"].tokenizer(["a dog"], return_tensors="pt")["input_ids"]
    full = members["gpt"].model(input_ids=torch.cat((prompt, torch.tensor([[40, 50]])), 1)).logits[0, -1]
    assert torch.allclose(after_rewind, fresh.log_probs(), atol=1e-5)
    assert torch.allclose(after_rewind, torch.log_softmax(full.float(), -1), atol=1e-5)
