"""MT and generation stages: parity with transformers' own generate, offline loading, per-item errors."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from stages.base import ItemError
from stages.generate import Generate, Prompt
from stages.payloads import Hypothesis
from stages.translate import SourceText, Translate

SOURCES = ["the cat sees a dog .", "who is not big ?", "the small red house and the green one is two three",
           "dog", "", "a cat runs"]


def _hf_generate(path, texts, **kw):
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSeq2SeqLM.from_pretrained(path, local_files_only=True).eval()
    with torch.no_grad():
        out = []
        for t in texts:  # one sentence per call: no padding effects in the reference
            enc = tok([t], return_tensors="pt")
            seq = model.generate(**enc, max_new_tokens=20, **kw)
            out.append(tok.decode(seq[0], skip_special_tokens=True).strip())
    return out


@pytest.mark.parametrize("beams", [1, 4])
def test_mt_equals_hf_generate(tiny_marian, beams):
    stage = Translate(model=str(tiny_marian), num_beams=beams, max_new_tokens=20, generate_batch=4,
                      empty_source="empty")
    got = stage.process([SourceText(text=t) for t in SOURCES])
    ref = _hf_generate(str(tiny_marian), [t for t in SOURCES if t], num_beams=beams)
    assert [g.text for g in got if g.source_text] == ref
    assert got[SOURCES.index("")].text == ""  # empty source -> empty translation, no model call
    assert all(g.score is not None for g in got if g.source_text)


def test_mt_nbest_and_upstream_nbest(tiny_marian):
    stage = Translate(model=str(tiny_marian), num_beams=4, nbest=3, max_new_tokens=20)
    [one] = stage.process([SourceText(text=SOURCES[0])])
    assert len(one.nbest) == 3 and one.nbest[0].text == one.text
    assert one.nbest[0].score >= one.nbest[1].score >= one.nbest[2].score
    # With upstream alternatives, the choice follows upstream score + translation score.
    picky = Translate(model=str(tiny_marian), num_beams=2, use_upstream_nbest=True, upstream_weight=100.0,
                      max_new_tokens=20)
    alts = [Hypothesis(text=SOURCES[0], score=-5.0), Hypothesis(text=SOURCES[5], score=-0.1)]
    [best] = picky.process([SourceText(text=SOURCES[0], nbest=alts)])
    assert best.source_text == SOURCES[5]


def test_mt_overlong_input_fails_alone(tiny_marian):
    stage = Translate(model=str(tiny_marian), max_input_tokens=8)
    got = stage.run_batch([SourceText(text="the cat " * 10), SourceText(text="a dog")])
    assert isinstance(got[0], ItemError) and "over max_input_tokens=8" in got[0].message
    assert not isinstance(got[1], ItemError)


def test_generation_equals_hf_generate_with_left_padding(tiny_gpt2):
    prompts = ["the cat", "who is not big and", "dog"]
    stage = Generate(model=str(tiny_gpt2), max_new_tokens=6)
    got = stage.process([Prompt(text=p) for p in prompts])
    tok = AutoTokenizer.from_pretrained(str(tiny_gpt2), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2), local_files_only=True).eval()
    for g, p in zip(got, prompts):
        enc = tok([p], return_tensors="pt")
        seq = model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert g.text == tok.decode(seq[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_sampling_is_reproducible_with_a_seed(tiny_gpt2):
    make = lambda seed: Generate(model=str(tiny_gpt2), max_new_tokens=8, do_sample=True, seed=seed)  # noqa: E731
    batch = [Prompt(text="the cat"), Prompt(text="a dog")]
    a, b = make(1).process(batch), make(1).process(batch)
    assert [x.text for x in a] == [x.text for x in b]
    outs = {tuple(x.text for x in make(s).process(batch)) for s in range(4)}
    assert len(outs) > 1  # the seed matters


def test_chat_without_template_is_a_per_item_error(tiny_gpt2):
    from stages.generate import ChatMessage

    stage = Generate(model=str(tiny_gpt2), max_new_tokens=2)
    got = stage.run_batch([Prompt(messages=[ChatMessage(role="user", content="hi")]), Prompt(text="the")])
    assert isinstance(got[0], ItemError) and "chat template" in got[0].message
    assert not isinstance(got[1], ItemError)
