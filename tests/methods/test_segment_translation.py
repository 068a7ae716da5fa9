"""Units for per-segment MT: sentences joined across mid-sentence cuts, over-long ones cut to fit."""
from __future__ import annotations

from types import SimpleNamespace

from stages.methods.segment_translation import ends_sentence, sentence_units, split_by_tokens


def words(text: str) -> int:  # a stand-in tokenizer: one token per word plus </s>
    return len(text.split()) + 1


def seg(start, end, text):
    return SimpleNamespace(start=start, end=end, text=text)


def test_a_segment_ending_mid_sentence_is_joined_with_the_next():
    units = sentence_units([seg(0, 1, "The cat"), seg(1.2, 2, "sleeps."), seg(3, 4, " Is he young? "),
                            seg(5, 6, "")], words, 64)
    assert [(u.start, u.end, u.source_text) for u in units] == [(0, 2, "The cat sleeps."), (3, 4, "Is he young?")]
    assert not any(u.split for u in units)


def test_joining_stops_at_the_token_limit():
    units = sentence_units([seg(0, 1, "a b c"), seg(1, 2, "d e f"), seg(2, 3, "g.")], words, 5)
    assert [u.source_text for u in units] == ["a b c", "d e f g."]  # "a b c d e f" would be 7 tokens


def test_sentence_end_rule():
    assert ends_sentence("Er schläft.") and ends_sentence('He said "no!"') and ends_sentence("Why? ")
    assert not ends_sentence("and then") and not ends_sentence("3.5 km")


def test_an_over_long_segment_is_cut_into_pieces_that_fit_and_flagged():
    text = " ".join(f"w{i}" for i in range(23))
    (unit,) = sentence_units([seg(0, 30, text)], words, 8)
    assert unit.split and all(words(p) <= 8 for p in unit.pieces)
    assert " ".join(unit.pieces) == text  # nothing lost, nothing doubled


def test_a_single_word_over_the_limit_is_cut_by_characters():
    chars = lambda t: len(t) + 1  # noqa: E731 - one token per character plus </s>
    pieces = split_by_tokens("ab " + "x" * 20, chars, 6)
    assert all(chars(p) <= 6 for p in pieces) and "".join(pieces[1:]) == "x" * 20 and pieces[0] == "ab"
