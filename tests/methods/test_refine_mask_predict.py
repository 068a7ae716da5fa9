"""Mask-Predict with a tiny random CMLM: the re-masking schedule, what may change, determinism, the stage."""
from __future__ import annotations

import pytest
import torch

from stages.mask_predict import MaskPredict
from stages.methods.refinement.cmlm import load_cmlm, save_cmlm
from stages.methods.refinement.refine_loop import ItemState
from stages.methods.refinement.mask_predict_steps import MaskPredictStep, lowest_confidence, mask_predict, remask_count
from stages.testing.tiny_checkpoints import tiny_cmlm
from stages.testing.tiny_tokenizers import word_tokenizer

SOURCES = ["the cat sees a dog .", "who runs ?", "the big red house is not small and the dog runs ."]


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


@pytest.fixture(scope="module")
def cmlm(tok):
    return tiny_cmlm(tok, seed=0)


def test_remask_count_is_the_linear_schedule():
    lengths = torch.tensor([10, 7, 1])
    # n = floor(N (T - t) / T) with T = 4, by hand
    assert remask_count(lengths, 1, 4).tolist() == [7, 5, 0]
    assert remask_count(lengths, 2, 4).tolist() == [5, 3, 0]
    assert remask_count(lengths, 3, 4).tolist() == [2, 1, 0]
    assert remask_count(lengths, 0, 4).tolist() == [10, 7, 1]


def test_lowest_confidence_picks_the_n_lowest_within_the_length():
    logp = torch.tensor([[-0.1, -3.0, -0.5, -2.0, -9.0],
                         [-1.0, -1.0, -0.2, -5.0, float("inf")]])
    chosen = lowest_confidence(logp, torch.tensor([4, 4]), torch.tensor([2, 2]))
    # row 0: -9.0 is beyond the length (4) so it is not a candidate; row 1: a tie, the earlier position wins
    assert chosen.tolist() == [[False, True, False, True, False], [True, False, False, True, False]]


class Spy:
    """Wraps `decode`: records the [MASK] count of each row per pass, and adds fresh strong noise to the
    logits, so every pass would predict different tokens everywhere (a re-predicted unmasked token shows)."""

    def __init__(self, model):
        self.model, self.inner, self.masks = model, model.decode, []
        self.noise = torch.Generator().manual_seed(0)

    def __call__(self, target_ids, states, pad):
        self.masks.append((target_ids == self.model.config.mask_token_id).sum(-1).tolist())
        logits = self.inner(target_ids, states, pad)
        return logits + 20 * torch.randn(logits.shape, generator=self.noise)


def test_each_step_remasks_exactly_n_lowest_and_keeps_the_rest(tok, cmlm):
    T = 5
    spy = Spy(cmlm)
    cmlm.decode = spy
    try:
        step = MaskPredictStep(cmlm, tok, iterations=T, length_beam=3)
        states = [ItemState(i, s) for i, s in enumerate(SOURCES)]
        step(states, 0)
        lengths = torch.cat([s.memory.lengths for s in states])
        assert spy.masks[0] == lengths.tolist()  # iteration 0: every position of every candidate is masked
        for t in range(1, T):
            before = [(s.memory.tokens.clone(), s.memory.log_probs.clone()) for s in states]
            step(states, t)
            assert spy.masks[t] == remask_count(lengths, t, T).tolist()
            for s, (tokens, logp) in zip(states, before):
                m = s.memory
                for row in range(len(m.lengths)):
                    n = int(m.lengths[row]) * (T - t) // T
                    valid = logp[row][: int(m.lengths[row])]
                    expect = sorted(range(len(valid)), key=lambda j: (float(valid[j]), j))[:n]  # independent
                    assert sorted(m.masked[row].nonzero()[:, 0].tolist()) == sorted(expect)
                keep = ~m.masked
                assert torch.equal(m.tokens[keep], tokens[keep])  # unmasked tokens never change
                assert torch.equal(m.log_probs[keep], logp[keep])  # nor their probabilities
                assert not (m.tokens == cmlm.config.mask_token_id).any()
    finally:
        del cmlm.decode


def test_lengths_come_from_the_length_head_and_the_best_mean_wins(tok, cmlm):
    step = MaskPredictStep(cmlm, tok, iterations=3, length_beam=2)
    states = [ItemState(0, SOURCES[0])]
    step(states, 0)
    with torch.no_grad():
        enc = tok([SOURCES[0]], return_tensors="pt")["input_ids"]
        logits = cmlm.predict_length(*cmlm.encode(enc))[0]
    logits[0] = float("-inf")
    assert states[0].memory.lengths.tolist() == logits.topk(2).indices.tolist()
    m = states[0].memory
    means = [float(m.log_probs[r, : int(m.lengths[r])].mean()) for r in range(2)]
    best = max(range(2), key=lambda r: means[r])
    assert states[0].score == pytest.approx(means[best])
    assert states[0].output == tok.decode(m.tokens[best, : int(m.lengths[best])].tolist(), skip_special_tokens=True)


def test_decoder_is_bidirectional(tok, cmlm):
    """Changing the last target token changes the first position's logits (a causal decoder could not)."""
    with torch.no_grad():
        enc = tok([SOURCES[0]], return_tensors="pt")["input_ids"]
        states, pad = cmlm.encode(enc)
        a = torch.tensor([[5, 6, 7, 8]])
        b = torch.tensor([[5, 6, 7, 9]])
        assert not torch.allclose(cmlm.decode(a, states, pad)[0, 0], cmlm.decode(b, states, pad)[0, 0])


def test_deterministic_and_batch_independent(tok, cmlm):
    first = mask_predict(cmlm, tok, SOURCES, iterations=4)
    again = mask_predict(cmlm, tok, SOURCES, iterations=4)
    assert [s.trace for s in first] == [s.trace for s in again]
    alone = [mask_predict(cmlm, tok, [src], iterations=4)[0] for src in SOURCES]
    assert [s.output for s in alone] == [s.output for s in first]  # padding never leaks across items
    other = mask_predict(tiny_cmlm(tok, seed=1), tok, SOURCES, iterations=4)
    assert [s.output for s in other] != [s.output for s in first]
    assert all(s.stopped_because == "cap" and len(s.trace) == 4 for s in first)


def test_stage_loads_a_saved_cmlm(tmp_path, tok, cmlm):
    path = save_cmlm(cmlm, tok, tmp_path / "cmlm")
    reloaded, _ = load_cmlm(path)
    for (name, a), (_, b) in zip(cmlm.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
    stage = MaskPredict(model=str(path), iterations=4, length_beam=3)
    long = " ".join(["dog"] * 80)
    results = stage.run_batch([MaskPredict.Input(text=s) for s in SOURCES] + [MaskPredict.Input(text=long)])
    direct = mask_predict(cmlm, tok, SOURCES, iterations=4)
    assert [r.text for r in results[:3]] == [s.output for s in direct]
    assert results[0].iterations == 4 and results[0].trace[-1].output == results[0].text
    assert results[0].trace[0].info["masked"] == results[0].trace[0].info["lengths"]
    assert results[3].kind == "bad_input" and "source positions" in results[3].message
