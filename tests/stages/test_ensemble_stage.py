"""The ensemble MT stage: a one-member ensemble is the plain MT stage; it drops into the cascade."""
from __future__ import annotations

import pytest

from pipelines import Pipeline
from stages.base import ItemError
from stages.ensemble import EnsembleTranslate
from stages.translate import SourceText, Translate
from stages.testing.tiny_checkpoints import save_marian

SOURCES = ["the cat sees a dog .", "who is not big ?", "a cat runs", "", "the small red house"]


@pytest.fixture(scope="module")
def second_marian(tmp_path_factory):
    return save_marian(tmp_path_factory.mktemp("marian2"), seed=1)


@pytest.mark.parametrize("beams", [1, 3])
def test_one_member_ensemble_equals_the_mt_stage(tiny_marian, beams):
    single = Translate(model=str(tiny_marian), num_beams=beams, max_new_tokens=16, empty_source="empty")
    ens = EnsembleTranslate(members=[str(tiny_marian)], num_beams=beams, max_new_tokens=16)
    items = [SourceText(text=t) for t in SOURCES]
    assert [r.text for r in ens.process(items)] == [r.text for r in single.process(items)]


def test_two_members_differ_from_each_alone_and_weights_matter(tiny_marian, second_marian):
    items = [SourceText(text=t) for t in SOURCES[:3]]
    a = [r.text for r in EnsembleTranslate(members=[str(tiny_marian)], max_new_tokens=12).process(items)]
    b = [r.text for r in EnsembleTranslate(members=[str(second_marian)], max_new_tokens=12).process(items)]
    lean_b = EnsembleTranslate(members=[str(tiny_marian), str(second_marian)], weights=[1e-6, 1.0],
                               max_new_tokens=12)
    assert [r.text for r in lean_b.process(items)] == b  # (almost) all weight on b behaves like b
    assert a != b


def greedy_mixture(paths, text: str, max_new_tokens: int) -> str:
    """Independent reference: greedy decoding on the average of the members' next-token probabilities,
    by plain HF forward passes (no cache), with Marian's generation rules (pad never written,
    eos forced on the last step)."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths[0])
    models = [AutoModelForSeq2SeqLM.from_pretrained(p).eval() for p in paths]
    src = tok(text, return_tensors="pt")
    out = [models[0].config.decoder_start_token_id]
    with torch.no_grad():
        for step in range(max_new_tokens):
            prefix = torch.tensor([out])
            probs = sum(m(**src, decoder_input_ids=prefix).logits[0, -1].softmax(-1) for m in models) / len(models)
            probs[tok.pad_token_id] = 0
            out.append(tok.eos_token_id if step == max_new_tokens - 1 else int(probs.argmax()))
            if out[-1] == tok.eos_token_id:
                break
    return tok.decode(out, skip_special_tokens=True)


def test_two_member_ensemble_differs_from_both_members_and_equals_the_probability_mixture(
        tiny_marian, second_marian):
    items = [SourceText(text=t) for t in SOURCES[:3]]

    def texts(members):
        return [r.text for r in EnsembleTranslate(members=members, num_beams=1, max_new_tokens=12).process(items)]

    a, b = texts([str(tiny_marian)]), texts([str(second_marian)])
    both = texts([str(tiny_marian), str(second_marian)])
    assert both == [greedy_mixture([tiny_marian, second_marian], i.text, 12) for i in items]
    assert a == [greedy_mixture([tiny_marian], i.text, 12) for i in items]  # the reference holds for one model
    assert any(e != x and e != y for e, x, y in zip(both, a, b)), (both, a, b)


def test_wrong_weight_count_is_a_config_error(tiny_marian):
    with pytest.raises(ValueError, match="2 weights for 1 members"):
        EnsembleTranslate(members=[str(tiny_marian)], weights=[0.5, 0.5])


def test_ensemble_stage_replaces_mt_in_a_pipeline_and_fails_per_item(tiny_marian, second_marian):
    from tests.toy_stages import Upper

    stage = EnsembleTranslate(members=[str(tiny_marian), str(second_marian)], combiner="log_linear",
                              max_input_tokens=6, max_new_tokens=8)
    Pipeline.chain(Upper(), stage)  # Text -> SourceText wiring type-checks
    got = stage.run_batch([SourceText(text="the cat " * 6), SourceText(text="a dog")])
    assert isinstance(got[0], ItemError) and "max_input_tokens" in got[0].message
    assert not isinstance(got[1], ItemError)
