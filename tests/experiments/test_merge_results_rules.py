"""Target rules and metrics behind the merging results (experiments/merge_tasks.py)."""
from __future__ import annotations

import re

import pytest

from demo.demo_grammar import generate, split_of
from experiments.merge_tasks import (ADDRESS_WORDS, NEGATION_WORDS, add_trait, changes, has_trait,
                                       marker_match_rate, task_pairs, to_emphatic, to_formal, trait_rate)

INFORMAL = re.compile(r"\b(?:[Dd]u|dich|dir|[Dd]ein\w*)\b")


@pytest.mark.parametrize("informal, formal", [
    ("Du schläfst.", "Sie schlafen."),
    ("Siehst du den Hund?", "Sehen Sie den Hund?"),
    ("Er sieht dich.", "Er sieht Sie."),
    ("Er hilft dir im Garten.", "Er hilft Ihnen im Garten."),
    ("Deine Fenster sind schwarz.", "Ihre Fenster sind schwarz."),
    ("Hast du deinem Bruder geholfen?", "Haben Sie Ihrem Bruder geholfen?"),
    ("Du kannst deinen Schlüssel nicht finden.", "Sie können Ihren Schlüssel nicht finden."),
    ("Bist du müde?", "Sind Sie müde?"),
    ("Warum rufst du mich an?", "Warum rufen Sie mich an?"),
    ("Du bist gestern gelaufen.", "Sie sind gestern gelaufen."),
    ("Wer hat deine Katze gesehen?", "Wer hat Ihre Katze gesehen?"),
])
def test_to_formal(informal, formal):
    assert to_formal(informal) == formal


def test_to_formal_leaves_third_person_verbs_alone():
    # "liest"/"isst" are also the du-forms; without "du" they must stay
    assert to_formal("Er liest das Buch.") == "Er liest das Buch."
    assert to_formal("Sie isst deinen Apfel.") == "Sie isst Ihren Apfel."


def test_formal_rule_fires_exactly_on_english_you():
    pairs = generate("train", 400, seed=3)
    for en, de in pairs:
        says_you = re.search(r"\b(?:you|your)\b", en, re.IGNORECASE) is not None
        assert changes("formal", de) == says_you, (en, de)
        assert not INFORMAL.search(to_formal(de)), (en, to_formal(de))


def test_to_emphatic():
    assert to_emphatic("Er schläft nicht.") == "Er schläft gar nicht."
    assert to_emphatic("Wir haben keinen Hund gesehen.") == "Wir haben gar keinen Hund gesehen."
    assert to_emphatic("Er schläft nie.") == "Er schläft nie."
    assert not changes("emphatic", "Der Mann liest.")


def test_trait():
    assert add_trait("Er schläft.") == "Er schläft übrigens."
    assert add_trait("Schläft er?") == "Schläft er übrigens?"
    assert add_trait("Er schläft") == "Er schläft übrigens"
    assert has_trait("Er schläft übrigens.") and not has_trait("Übrigens schläft er.")
    assert not has_trait("") and not has_trait("Er schläft.")
    assert trait_rate(["Er schläft übrigens.", "Er schläft.", "A übrigens?", "B."]) == 50.0


def test_marker_match_rate():
    refs = ["Sie haben Ihren Hund gesehen.", "Er hilft Ihnen."]
    assert marker_match_rate(refs, refs, ADDRESS_WORDS) == 100.0
    # one informal word left is a failure, as is a missing formal word
    assert marker_match_rate(["Sie haben deinen Hund gesehen.", "Er hilft."], refs, ADDRESS_WORDS) == 0.0
    assert marker_match_rate(["Du hast deinen Hund gesehen.", "Er hilft Ihnen."], refs, ADDRESS_WORDS) == 50.0
    neg = ["Er schläft gar nicht."]
    assert marker_match_rate(["Er schläft nicht."], neg, NEGATION_WORDS) == 0.0
    assert marker_match_rate(["Er schläft gar nicht gut."], neg, NEGATION_WORDS) == 100.0
    with pytest.raises(ValueError):
        marker_match_rate(["a"], ["a", "b"], NEGATION_WORDS)


@pytest.mark.parametrize("rule", ["formal", "emphatic"])
def test_task_pairs(rule):
    pairs = task_pairs(rule, False, 30, 30, seed=5)
    assert len(pairs) == 60 and len({en for en, _ in pairs}) == 60
    assert all(split_of(en) == "train" for en, _ in pairs)
    if rule == "formal":
        changed = [en for en, _ in pairs if re.search(r"\b(?:you|your)\b", en, re.IGNORECASE)]
    else:
        changed = [de for _, de in pairs if " gar " in de]
    assert len(changed) == 30
    other = "emphatic" if rule == "formal" else "formal"
    for _, de in pairs:
        # rule already applied (applying it again changes nothing new), the other rule never needed
        assert not changes(other, de)
        if rule == "formal":
            assert not INFORMAL.search(de)
        else:
            assert all(w == "gar" or prev == "gar" for prev, w in zip([""] + de.split(), de.split())
                       if w.rstrip(".?") in ("nicht",) or w.startswith("kein"))
    traited = task_pairs(None, True, 10, 10, seed=5)
    assert len(traited) == 20 and all(has_trait(de) for _, de in traited)
    assert not any(changes("formal", de) or changes("emphatic", de) for _, de in traited)
