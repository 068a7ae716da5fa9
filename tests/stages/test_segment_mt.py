"""Per-segment MT with the demo Marian model: equal to translating each segment alone, batched."""
from __future__ import annotations

from pathlib import Path

import pytest

from stages.ensemble import EnsembleTranslate
from stages.methods.segment_translation import split_by_tokens
from stages.payloads import Segment
from stages.translate import SourceText, Translate

MT = Path(__file__).resolve().parents[2] / "assets" / "models" / "mt-en-de"
pytestmark = pytest.mark.skipif(not MT.is_dir(), reason="the demo MT model comes with a source checkout")

SENTENCES = ["Your windows are black.", "Is he young?", "He sleeps.", "My teacher sold a ball last week."]


def _seg(start: float, text: str) -> Segment:
    return Segment(start=start, end=start + 1.5, text=text, avg_logprob=-0.1, no_speech_prob=0.01,
                   compression_ratio=1.0, temperature=0.0)


def _item(texts: list[str]) -> SourceText:
    segments = [_seg(2.0 * k, t) for k, t in enumerate(texts)]
    return SourceText(text=" ".join(texts), segments=segments)


@pytest.mark.parametrize("stage_kind", ["mt", "ensemble"])
def test_per_segment_mt_equals_each_segment_alone(stage_kind):
    stage = (Translate(model=str(MT), target_lang="de", num_beams=2, empty_source="empty") if stage_kind == "mt"
             else EnsembleTranslate(members=[str(MT)], target_lang="de", num_beams=2))
    batch = [_item(SENTENCES[:3]), _item(SENTENCES[3:]), SourceText(text=SENTENCES[1])]
    got = stage.process(batch)
    alone = {t: stage.process([SourceText(text=t)])[0].text for t in SENTENCES}
    assert [s.text for s in got[0].segments] == [alone[t] for t in SENTENCES[:3]]
    assert [(s.start, s.end, s.source_text) for s in got[0].segments] == [(0.0, 1.5, SENTENCES[0]),
                                                                           (2.0, 3.5, SENTENCES[1]),
                                                                           (4.0, 5.5, SENTENCES[2])]
    assert got[0].text == " ".join(alone[t] for t in SENTENCES[:3])
    assert [s.text for s in got[1].segments] == [alone[SENTENCES[3]]]  # one segment: the whole-text path
    assert got[2].text == alone[SENTENCES[1]] and got[2].segments is None  # plain text: as before


def test_an_over_long_segment_is_split_and_flagged_never_an_error():
    long_text = " ".join(SENTENCES).replace(".", ",").replace("?", ",")  # one segment, no sentence end inside
    stage = Translate(model=str(MT), target_lang="de", num_beams=1, max_input_tokens=12, empty_source="empty")
    plain = stage.process([SourceText(text=long_text)])[0]
    assert "over max_input_tokens=12" in str(plain)  # plain text over the limit still fails, as before
    (got,) = stage.process([SourceText(text=long_text, segments=[_seg(0.0, long_text)])])
    (segment,) = got.segments
    assert segment.split and segment.source_text == long_text and segment.text == got.text
    _, tok = stage.load()
    pieces = split_by_tokens(long_text, lambda t: len(tok(t)["input_ids"]), 12)
    assert len(pieces) > 1 and " ".join(pieces) == long_text
    assert got.text == " ".join(stage.process([SourceText(text=p)])[0].text for p in pieces)


def test_silence_is_an_empty_translation_with_no_segments():
    stage = Translate(model=str(MT), target_lang="de", empty_source="empty")
    (got,) = stage.process([SourceText(text="", segments=[])])
    assert got.text == "" and got.segments == []
