"""Masked-diffusion repair: hand-checked with a fake MLM of fixed logits, then a tiny random BERT (also via a flow)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from flows import run
from pipelines import Pipeline
from stages.masked_diffusion import MaskedDiffusionRepair
from stages.methods.refinement.refine_loop import ItemState
from stages.methods.refinement.unmasking_steps import MaskedDiffusionStep, masked_diffusion, still_masked_after
from stages.testing.tiny_checkpoints import save_bert_mlm
from stages.testing.tiny_tokenizers import mlm_word_tokenizer

TOK = mlm_word_tokenizer()
V = len(TOK)
ID = TOK.convert_tokens_to_ids


class FixedLogits:
    """An MLM that ignores its input: position p always gets logits[p]. Records every input it sees."""

    def __init__(self, logits: torch.Tensor):
        self.logits, self.seen = logits, []
        self.device = torch.device("cpu")

    def __call__(self, input_ids, attention_mask):
        self.seen.append(input_ids.clone())
        return SimpleNamespace(logits=self.logits[None, : input_ids.shape[1]].expand(input_ids.shape[0], -1, -1))


def hand_model() -> FixedLogits:
    """For '[CLS] the cat sees a dog [SEP]' (positions 0-6)."""
    z = torch.zeros(7, V)
    z[0, ID("dog")] = 10  # [CLS] and [SEP] look improbable: they would be re-masked if they were not pinned
    z[6, ID("cat")] = 10
    z[1, ID("the")] = 8
    z[2, ID("cat")], z[2, ID("dog")] = 1, 5  # 'cat' doubtful; best non-special guess: 'dog'
    z[2, ID("[MASK]")], z[2, ID("[SEP]")] = 20, 20  # specials are never predicted
    z[3, ID("sees")] = 8
    z[4, ID("a")], z[4, ID("the")] = 2, 12  # 'a' doubtful; 'the' is a very confident guess
    z[5, ID("dog")] = 8
    return FixedLogits(z)


def test_hand_example_remasks_the_doubtful_and_unmasks_the_most_confident_first():
    model = hand_model()
    [state] = masked_diffusion(model, TOK, ["the cat sees a dog"], steps=2, remask_fraction=0.4)
    assert [t.output for t in state.trace] == ["the [MASK] sees [MASK] dog", "the [MASK] sees the dog",
                                               "the dog sees the dog"]
    assert state.trace[0].info == {"masked": 2, "positions": [2, 4]}
    assert state.trace[1].info == {"unmasked": [4], "still_masked": 1}  # p('the') at 4 beats p('dog') at 2
    assert state.trace[2].info == {"unmasked": [2], "still_masked": 0}
    assert state.stopped_because == "criterion" and state.output == "the dog sees the dog"
    mask = ID("[MASK]")
    assert model.seen[1][0].tolist() == [ID("[CLS]"), ID("the"), mask, ID("sees"), mask, ID("dog"), ID("[SEP]")]


def test_all_mask_start_unmasks_in_order_of_confidence():
    model = hand_model()
    [state] = masked_diffusion(model, TOK, ["the cat sees a dog"], steps=5, remask_fraction=1.0)
    z = model.logits.clone()
    z[:, TOK.all_special_ids] = float("-inf")
    conf = torch.softmax(z, -1).max(-1).values[1:6]
    expected = (torch.argsort(conf, descending=True, stable=True) + 1).tolist()  # independent ranking
    assert [t.info["unmasked"] for t in state.trace[1:]] == [[p] for p in expected]
    assert state.trace[0].info["positions"] == [1, 2, 3, 4, 5]


def test_schedule_is_linear():
    assert [still_masked_after(7, s, 3) for s in range(4)] == [7, 4, 2, 0]
    assert [still_masked_after(2, s, 4) for s in range(5)] == [2, 1, 1, 0, 0]


def test_nothing_doubtful_means_nothing_changes():
    [state] = masked_diffusion(hand_model(), TOK, ["the cat sees a dog"], steps=2, confidence_threshold=1e-9)
    assert state.stopped_because == "criterion" and len(state.trace) == 1
    assert state.output == "the cat sees a dog"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return save_bert_mlm(tmp_path_factory.mktemp("bert"))


def test_real_mlm_never_touches_special_tokens(tiny_bert):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(tiny_bert).eval()
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    texts = ["the cat sees a dog .", "who is the man ?", "a big red car and a small green house"]
    step = MaskedDiffusionStep(model, tok, steps=3, remask_fraction=0.5)
    states = [ItemState(i, t) for i, t in enumerate(texts)]
    step(states, 0)
    originals = [s.memory.ids.clone() for s in states]
    totals = [s.memory.total for s in states]
    for t in range(1, 4):
        step(states, t)
        for s, ids, k in zip(states, originals, totals):
            c = s.memory
            assert torch.equal(c.ids[c.pinned], ids[c.pinned])  # [CLS] and [SEP] stay
            assert int(c.masked.sum()) == still_masked_after(k, t, 3)
    for s in states:
        content = s.memory.ids[~s.memory.pinned].tolist()
        assert not set(content) & set(tok.all_special_ids)


def test_stage_through_the_flow_persists_traces(tmp_path, tiny_bert):
    stage = MaskedDiffusionRepair(model=str(tiny_bert), steps=2, remask_fraction=0.5)
    items = [{"id": "a", "text": "the cat sees a dog ."}, {"id": "empty", "text": ""},
             {"id": "long", "text": " ".join(["dog"] * 100)}]
    result = run(Pipeline.chain(stage), items, out=str(tmp_path), job_id="md", batch_size=3)
    rows = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "md" / "outputs.jsonl").read_text()
            .splitlines()}
    out = rows["a"]["masked_diffusion"]
    assert out["source_text"] == "the cat sees a dog ." and out["iterations"] == 3
    assert out["trace"][0]["output"].count("[MASK]") == 3 and "[MASK]" not in out["text"]
    assert rows["empty"]["masked_diffusion"]["stopped_because"] == "criterion"
    assert [e["item_id"] for e in result.errors] == ["long"] and "max_tokens" in result.errors[0]["message"]
