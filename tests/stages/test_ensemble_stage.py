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
