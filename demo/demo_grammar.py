"""A small English->German grammar that makes the offline demo's parallel corpus.

Every English sentence is built together with its German translation from the
same abstract choice (subject, verb, objects, tense, negation, question type,
adverbials), so German case, gender, adjective endings and word order
(verb-second, verb-first questions, modal/participle at the end, separable
prefixes) are produced by rule rather than translated. Numbers are written as
words because the English side is also spoken by espeak.

Splits are fixed by a hash of the English sentence, so a sentence can never be
in two splits, whatever seed or style is asked for.
"""

from __future__ import annotations

import argparse
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

Split = Literal["train", "dev", "test"]
Style = Literal["any", "statement", "question"]

# --------------------------------------------------------------------------
# Lexicon
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Noun:
    en: str
    en_pl: str
    de: str
    de_pl: str
    gender: str  # "m", "f", "n"
    kinds: frozenset[str]

    @property
    def de_dat_pl(self) -> str:
        # German dative plural adds -n unless the plural already ends in -n or -s.
        return self.de_pl if self.de_pl.endswith(("n", "s")) else self.de_pl + "n"


def _noun(en: str, en_pl: str, de: str, de_pl: str, gender: str, kinds: str) -> Noun:
    return Noun(en, en_pl, de, de_pl, gender, frozenset(kinds.split()))


NOUNS = [
    _noun("man", "men", "Mann", "Männer", "m", "person"),
    _noun("woman", "women", "Frau", "Frauen", "f", "person"),
    _noun("child", "children", "Kind", "Kinder", "n", "person"),
    _noun("teacher", "teachers", "Lehrer", "Lehrer", "m", "person"),
    _noun("doctor", "doctors", "Arzt", "Ärzte", "m", "person"),
    _noun("friend", "friends", "Freund", "Freunde", "m", "person"),
    _noun("girl", "girls", "Mädchen", "Mädchen", "n", "person"),
    _noun("brother", "brothers", "Bruder", "Brüder", "m", "person"),
    _noun("sister", "sisters", "Schwester", "Schwestern", "f", "person"),
    _noun("mother", "mothers", "Mutter", "Mütter", "f", "person"),
    _noun("father", "fathers", "Vater", "Väter", "m", "person"),
    _noun("cook", "cooks", "Koch", "Köche", "m", "person"),
    _noun("dog", "dogs", "Hund", "Hunde", "m", "animal wash"),
    _noun("cat", "cats", "Katze", "Katzen", "f", "animal"),
    _noun("horse", "horses", "Pferd", "Pferde", "n", "animal"),
    _noun("bird", "birds", "Vogel", "Vögel", "m", "animal hear"),
    _noun("book", "books", "Buch", "Bücher", "n", "thing read write open carry buy"),
    _noun("letter", "letters", "Brief", "Briefe", "m", "thing read write open carry"),
    _noun("newspaper", "newspapers", "Zeitung", "Zeitungen", "f", "thing read carry buy"),
    _noun("apple", "apples", "Apfel", "Äpfel", "m", "thing eat carry buy"),
    _noun("egg", "eggs", "Ei", "Eier", "n", "thing eat carry buy"),
    _noun("cake", "cakes", "Kuchen", "Kuchen", "m", "thing eat carry buy"),
    _noun("car", "cars", "Auto", "Autos", "n", "thing wash buy paint"),
    _noun("table", "tables", "Tisch", "Tische", "m", "thing carry buy paint"),
    _noun("chair", "chairs", "Stuhl", "Stühle", "m", "thing carry buy paint"),
    _noun("cup", "cups", "Tasse", "Tassen", "f", "thing wash carry buy"),
    _noun("key", "keys", "Schlüssel", "Schlüssel", "m", "thing carry buy"),
    _noun("bag", "bags", "Tasche", "Taschen", "f", "thing open carry buy"),
    _noun("picture", "pictures", "Bild", "Bilder", "n", "thing carry buy paint"),
    _noun("ball", "balls", "Ball", "Bälle", "m", "thing carry buy"),
    _noun("flower", "flowers", "Blume", "Blumen", "f", "thing carry buy paint"),
    _noun("house", "houses", "Haus", "Häuser", "n", "thing buy paint"),
    _noun("song", "songs", "Lied", "Lieder", "n", "thing write hear"),
    _noun("bicycle", "bicycles", "Fahrrad", "Fahrräder", "n", "thing wash buy paint"),
    _noun("door", "doors", "Tür", "Türen", "f", "thing open paint"),
    _noun("window", "windows", "Fenster", "Fenster", "n", "thing open"),
    _noun("box", "boxes", "Kiste", "Kisten", "f", "thing open carry buy"),
    _noun("phone", "phones", "Telefon", "Telefone", "n", "thing carry buy hear"),
    _noun("shoe", "shoes", "Schuh", "Schuhe", "m", "thing wash carry buy"),
]

# (English, German stem, kinds it may describe)
ADJECTIVES = [
    ("big", "groß", "animal thing"),
    ("small", "klein", "person animal thing"),
    ("old", "alt", "person animal thing"),
    ("new", "neu", "thing"),
    ("young", "jung", "person animal"),
    ("tired", "müde", "person animal"),
    ("happy", "glücklich", "person"),
    ("nice", "nett", "person"),
    ("red", "rot", "thing"),
    ("blue", "blau", "thing"),
    ("green", "grün", "thing"),
    ("black", "schwarz", "animal thing"),
    ("white", "weiß", "animal thing"),
    ("cheap", "billig", "thing"),
    ("beautiful", "schön", "animal thing"),
]

NUMBERS_EN = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen", "twenty",
]
NUMBERS_DE = [
    "null", "ein", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn",
    "elf", "zwölf", "dreizehn", "vierzehn", "fünfzehn", "sechzehn", "siebzehn",
    "achtzehn", "neunzehn", "zwanzig",
]


@dataclass(frozen=True)
class Verb:
    en: tuple[str, str, str, str]  # base, 3sg, simple past, past participle
    de: tuple[str, str, str, str]  # infinitive, ich, du, er
    participle: str
    aux: str  # "haben" or "sein"
    frame: str  # "intr", "acc", "dat", "ditr"
    subj: str  # kinds allowed as subject
    obj: str = ""  # kinds allowed as (accusative) object
    recipient: str = ""  # kinds allowed as dative object of "ditr"
    prefix: str = ""  # separable prefix (anrufen -> ruft ... an)


def _verb(en: str, de: str, participle: str, frame: str, subj: str, obj: str = "",
          recipient: str = "", aux: str = "haben", prefix: str = "") -> Verb:
    en_forms = tuple(en.split())
    de_forms = tuple(de.split())
    assert len(en_forms) == 4 and len(de_forms) == 4, (en, de)
    return Verb(en_forms, de_forms, participle, aux, frame, subj, obj, recipient, prefix)


VERBS = [
    _verb("see sees saw seen", "sehen sehe siehst sieht", "gesehen", "acc", "person animal", "person animal thing"),
    _verb("read reads read read", "lesen lese liest liest", "gelesen", "acc", "person", "read"),
    _verb("buy buys bought bought", "kaufen kaufe kaufst kauft", "gekauft", "acc", "person", "buy"),
    _verb("sell sells sold sold", "verkaufen verkaufe verkaufst verkauft", "verkauft", "acc", "person", "buy"),
    _verb("find finds found found", "finden finde findest findet", "gefunden", "acc", "person animal", "carry"),
    _verb("eat eats ate eaten", "essen esse isst isst", "gegessen", "acc", "person", "eat"),
    _verb("carry carries carried carried", "tragen trage trägst trägt", "getragen", "acc", "person", "carry"),
    _verb("open opens opened opened", "öffnen öffne öffnest öffnet", "geöffnet", "acc", "person", "open"),
    _verb("write writes wrote written", "schreiben schreibe schreibst schreibt", "geschrieben", "acc", "person", "write"),
    _verb("need needs needed needed", "brauchen brauche brauchst braucht", "gebraucht", "acc", "person", "buy"),
    _verb("love loves loved loved", "lieben liebe liebst liebt", "geliebt", "acc", "person", "person animal"),
    _verb("visit visits visited visited", "besuchen besuche besuchst besucht", "besucht", "acc", "person", "person"),
    _verb("call calls called called", "rufen rufe rufst ruft", "angerufen", "acc", "person", "person", prefix="an"),
    _verb("wash washes washed washed", "waschen wasche wäschst wäscht", "gewaschen", "acc", "person", "wash"),
    _verb("paint paints painted painted", "malen male malst malt", "gemalt", "acc", "person", "paint"),
    _verb("know knows knew known", "kennen kenne kennst kennt", "gekannt", "acc", "person", "person animal"),
    _verb("hear hears heard heard", "hören höre hörst hört", "gehört", "acc", "person animal", "hear person"),
    _verb("help helps helped helped", "helfen helfe hilfst hilft", "geholfen", "dat", "person animal", "person animal"),
    _verb("thank thanks thanked thanked", "danken danke dankst dankt", "gedankt", "dat", "person", "person"),
    _verb("follow follows followed followed", "folgen folge folgst folgt", "gefolgt", "dat", "person animal", "person animal", aux="sein"),
    _verb("give gives gave given", "geben gebe gibst gibt", "gegeben", "ditr", "person", "carry", "person animal"),
    _verb("show shows showed shown", "zeigen zeige zeigst zeigt", "gezeigt", "ditr", "person", "carry paint", "person"),
    _verb("bring brings brought brought", "bringen bringe bringst bringt", "gebracht", "ditr", "person", "carry", "person"),
    _verb("sleep sleeps slept slept", "schlafen schlafe schläfst schläft", "geschlafen", "intr", "person animal"),
    _verb("work works worked worked", "arbeiten arbeite arbeitest arbeitet", "gearbeitet", "intr", "person"),
    _verb("play plays played played", "spielen spiele spielst spielt", "gespielt", "intr", "person animal"),
    _verb("wait waits waited waited", "warten warte wartest wartet", "gewartet", "intr", "person animal"),
    _verb("sing sings sang sung", "singen singe singst singt", "gesungen", "intr", "person animal"),
    _verb("run runs ran run", "laufen laufe läufst läuft", "gelaufen", "intr", "person animal", aux="sein"),
    _verb("cook cooks cooked cooked", "kochen koche kochst kocht", "gekocht", "intr", "person"),
]

# modal: (English affirmative per person key, English negated, German forms ich/du/er/inf)
MODALS = {
    "can": ({"3sg": "can", "other": "can"}, {"3sg": "cannot", "other": "cannot"},
            ("können", "kann", "kannst", "kann")),
    "want": ({"3sg": "wants to", "other": "want to"}, {"3sg": "does not want to", "other": "do not want to"},
             ("wollen", "will", "willst", "will")),
    "must": ({"3sg": "must", "other": "must"}, None, ("müssen", "muss", "musst", "muss")),
}

PLACES = [
    ("in the garden", "im Garten"), ("in the park", "im Park"), ("in the kitchen", "in der Küche"),
    ("at school", "in der Schule"), ("at home", "zu Hause"), ("in the office", "im Büro"),
    ("in the city", "in der Stadt"), ("on the street", "auf der Straße"), ("in the house", "im Haus"),
]

TIMES_PRESENT = [
    ("today", "heute"), ("tomorrow", "morgen"), ("now", "jetzt"), ("every day", "jeden Tag"),
    ("in the morning", "am Morgen"), ("in the evening", "am Abend"),
]
TIMES_PAST = [
    ("yesterday", "gestern"), ("last week", "letzte Woche"), ("last year", "letztes Jahr"),
    ("this morning", "heute Morgen"),
]
TIMES_PERFECT = [("today", "heute"), ("this week", "diese Woche")]
FREQUENCY = [("often", "oft"), ("always", "immer"), ("sometimes", "manchmal"), ("never", "nie")]

PRONOUNS = {
    # key: (English subject, German subject, person key)
    "i": ("I", "ich", "1sg"),
    "you": ("you", "du", "2sg"),
    "he": ("he", "er", "3sg"),
    "she": ("she", "sie", "3sg"),
    "we": ("we", "wir", "1pl"),
    "they": ("they", "sie", "3pl"),
}
# object pronouns: English, German accusative, German dative, person key
OBJECT_PRONOUNS = [("me", "mich", "mir", "1sg"), ("you", "dich", "dir", "2sg"), ("us", "uns", "uns", "1pl")]

# --------------------------------------------------------------------------
# German noun phrases
# --------------------------------------------------------------------------

_DEF = {"nom": "der die das die", "acc": "den die das die", "dat": "dem der dem den"}
_SLOT = {"m": 0, "f": 1, "n": 2, "pl": 3}
# Adjective endings by article type (weak after der/dieser, mixed after ein/mein/kein, strong with none).
_WEAK = {"nom": "e e e en", "acc": "en e e en", "dat": "en en en en"}
_MIXED = {"nom": "er e es en", "acc": "en e es en", "dat": "en en en en"}
_STRONG_PL = {"nom": "e", "acc": "e", "dat": "en"}
# Possessive/kein endings added to the stem (ein has no plural).
_EIN_ENDINGS = {"nom": ". e . e", "acc": "en e . e", "dat": "em er em en"}
DETERMINERS = {
    # key: (English sg, English pl or None, German stem or "def")
    "the": ("the", "the", "def"),
    "a": ("a", None, "ein"),
    "my": ("my", "my", "mein"),
    "our": ("our", "our", "unser"),
    "your": ("your", "your", "dein"),
}


def _ending(table: dict[str, str], case: str, slot: str) -> str:
    return table[case].split()[_SLOT[slot]]


def _de_adjective(stem: str, ending: str) -> str:
    # müde + e -> müde, müde + en -> müden
    return stem + (ending[1:] if stem.endswith("e") and ending.startswith("e") else ending)


@dataclass(frozen=True)
class NounPhrase:
    noun: Noun
    det: str  # key of DETERMINERS, or "num"
    plural: bool
    adjective: tuple[str, str] | None = None  # (English, German stem)
    number: int = 0

    @property
    def person(self) -> str:
        return "3pl" if self.plural else "3sg"

    def english(self) -> str:
        noun = self.noun.en_pl if self.plural else self.noun.en
        words = [self.adjective[0]] if self.adjective else []
        words.append(noun)
        if self.det == "num":
            return " ".join([NUMBERS_EN[self.number]] + words)
        det = DETERMINERS[self.det][1 if self.plural else 0]
        if det == "a" and words[0][0] in "aeio":
            det = "an"
        return " ".join([det] + words)

    def german(self, case: str, negated: bool = False) -> str:
        """Inflected German phrase; `negated` turns the indefinite article into kein."""
        slot = "pl" if self.plural else self.noun.gender
        if self.plural:
            noun = self.noun.de_dat_pl if case == "dat" else self.noun.de_pl
        else:
            noun = self.noun.de
        if self.det == "num":
            article = NUMBERS_DE[self.number]
            adj_end = _STRONG_PL[case]
        elif DETERMINERS[self.det][2] == "def":
            article = _DEF[case].split()[_SLOT[slot]]
            adj_end = _ending(_WEAK, case, slot)
        else:
            stem = "kein" if (negated and self.det == "a") else DETERMINERS[self.det][2]
            ending = _ending(_EIN_ENDINGS, case, slot).replace(".", "")
            if stem == "unser" and ending.startswith("e"):
                article = "unser" + ending  # unsere, unserem (not unsre)
            else:
                article = stem + ending
            adj_end = _ending(_MIXED, case, slot)
        words = [article]
        if self.adjective:
            words.append(_de_adjective(self.adjective[1], adj_end))
        words.append(noun)
        return " ".join(words)


@dataclass(frozen=True)
class Pronoun:
    en: str
    de_nom: str
    person: str
    de_acc: str = ""
    de_dat: str = ""

    def english(self) -> str:
        return self.en

    def german(self, case: str, negated: bool = False) -> str:
        return {"nom": self.de_nom, "acc": self.de_acc, "dat": self.de_dat}[case]


# --------------------------------------------------------------------------
# Sentence assembly
# --------------------------------------------------------------------------


def _de_finite(forms: tuple[str, str, str, str], person: str) -> str:
    inf, ich, du, er = forms
    return {"1sg": ich, "2sg": du, "3sg": er}.get(person, inf)


def _de_aux(aux: str, person: str) -> str:
    if aux == "sein":
        return {"1sg": "bin", "2sg": "bist", "3sg": "ist"}.get(person, "sind")
    return _de_finite(("haben", "habe", "hast", "hat"), person)


def _en_be(person: str) -> str:
    return {"1sg": "am", "3sg": "is"}.get(person, "are")


def _capitalise(text: str) -> str:
    return text[0].upper() + text[1:]


def _pick_kind(rng: random.Random, kinds: str) -> Noun:
    wanted = set(kinds.split())
    return rng.choice([n for n in NOUNS if n.kinds & wanted])


def _random_np(rng: random.Random, kinds: str, allow_number: bool = True) -> NounPhrase:
    noun = _pick_kind(rng, kinds)
    kind_of_noun = "person" if "person" in noun.kinds else ("animal" if "animal" in noun.kinds else "thing")
    adjective = None
    if rng.random() < 0.35:
        en, de, ok = rng.choice([a for a in ADJECTIVES if kind_of_noun in a[2].split()])
        adjective = (en, de)
    r = rng.random()
    if allow_number and r < 0.12:
        return NounPhrase(noun, "num", True, adjective, rng.randint(2, 20))
    det = rng.choices(["the", "a", "my", "our", "your"], weights=[5, 4, 1.5, 1, 1])[0]
    plural = det != "a" and rng.random() < 0.3
    return NounPhrase(noun, det, plural, adjective)


def _random_subject(rng: random.Random, kinds: str) -> NounPhrase | Pronoun:
    if rng.random() < 0.35:
        key = rng.choice(list(PRONOUNS))
        en, de, person = PRONOUNS[key]
        return Pronoun(en, de, person)
    return _random_np(rng, kinds)


@dataclass
class Sentence:
    en: str
    de: str
    kind: str  # "statement", "yesno", "wh", "predicate"


def _statement_or_question(rng: random.Random, style: Style) -> str:
    if style == "statement":
        return "statement"
    if style == "question":
        return rng.choice(["yesno", "yesno", "wh", "wh"])
    return rng.choices(["statement", "yesno", "wh"], weights=[6, 2, 2])[0]


def _predicate_sentence(rng: random.Random, mode: str) -> Sentence:
    subject = _random_subject(rng, "person animal thing")
    if isinstance(subject, NounPhrase):
        noun_kind = "person" if "person" in subject.noun.kinds else ("animal" if "animal" in subject.noun.kinds else "thing")
        # an adjective both attributive and predicative reads oddly; drop the attributive one
        subject = NounPhrase(subject.noun, subject.det, subject.plural, None, subject.number)
    else:
        noun_kind = "person"
    en_adj, de_adj, _ = rng.choice([a for a in ADJECTIVES if noun_kind in a[2].split()])
    person = subject.person
    be_en = _en_be(person)
    be_de = _de_aux("sein", person)
    negated = mode == "statement" and rng.random() < 0.25
    subj_en = subject.english()
    subj_de = subject.german("nom")
    if mode == "statement":
        en = f"{subj_en} {be_en}{' not' if negated else ''} {en_adj}."
        de = f"{subj_de} {be_de}{' nicht' if negated else ''} {de_adj}."
    elif mode == "yesno":
        en = f"{be_en} {subj_en} {en_adj}?"
        de = f"{be_de} {subj_de} {de_adj}?"
    else:
        en = f"why {be_en} {subj_en} {en_adj}?"
        de = f"warum {be_de} {subj_de} {de_adj}?"
    return Sentence(_capitalise(en), _capitalise(de), "predicate")


def _verb_sentence(rng: random.Random, mode: str) -> Sentence:
    verb = rng.choice(VERBS)
    tense = rng.choices(["present", "past", "perfect", "modal"], weights=[4, 2, 2, 2])[0]
    modal = rng.choice(list(MODALS)) if tense == "modal" else ""

    wh = ""
    if mode == "wh":
        options = ["where", "when", "why"]
        if verb.frame == "acc" and set(verb.obj.split()) & {"person", "animal"} and "thing" not in verb.obj:
            options += ["whom_acc"] * 2
        if verb.frame == "dat":
            options += ["whom_dat"] * 2
        if verb.frame in ("acc", "ditr") and "person" not in verb.obj.split():
            options += ["what", "what", "how_many"]
        options += ["who"]
        wh = rng.choice(options)

    # subject
    if wh == "who":
        subject: NounPhrase | Pronoun = Pronoun("who", "wer", "3sg")
    else:
        subject = _random_subject(rng, verb.subj)
    person = subject.person
    negated = mode == "statement" and rng.random() < 0.22 and not (tense == "modal" and modal == "must")

    # objects
    acc_obj: NounPhrase | Pronoun | None = None
    dat_obj: NounPhrase | Pronoun | None = None
    pronoun_obj_ok = mode == "statement"
    if verb.frame in ("acc", "dat"):
        if wh not in ("what", "whom_acc", "whom_dat", "how_many"):
            wants_person = "person" in verb.obj.split()
            if wants_person and pronoun_obj_ok and rng.random() < 0.2:
                choices = [p for p in OBJECT_PRONOUNS if p[3] != person]
                en_p, acc_p, dat_p, p_person = rng.choice(choices)
                obj: NounPhrase | Pronoun = Pronoun(en_p, "", p_person, acc_p, dat_p)
            else:
                obj = _random_np(rng, verb.obj, allow_number=not negated)
            if verb.frame == "acc":
                acc_obj = obj
            else:
                dat_obj = obj
    elif verb.frame == "ditr":
        dat_obj = _random_np(rng, verb.recipient, allow_number=False)
        if wh not in ("what", "how_many"):
            acc_obj = _random_np(rng, verb.obj, allow_number=not negated)
    how_many_np = None
    if wh == "how_many":
        how_many_np = _random_np(rng, verb.obj)
        how_many_np = NounPhrase(how_many_np.noun, "num", True, None, 2)

    # adverbials
    time = None
    if tense == "past":
        time = rng.choice(TIMES_PAST)  # English simple past always carries a past time
    elif rng.random() < 0.35 and wh != "when":
        time = rng.choice(TIMES_PERFECT if tense == "perfect" else TIMES_PRESENT)
        if tense != "perfect" and rng.random() < 0.15:
            hour = rng.randint(1, 12)
            time = (f"at {NUMBERS_EN[hour]} o'clock", f"um {NUMBERS_DE[hour]} Uhr")
    frequency = None
    if tense == "present" and time is None and not negated and wh != "when" and rng.random() < 0.2:
        frequency = rng.choice(FREQUENCY if mode == "statement" else FREQUENCY[:3])
    place = None
    if not negated and wh != "where" and rng.random() < (0.5 if verb.frame == "intr" else 0.2):
        place = rng.choice(PLACES)
    has_pronoun_obj = isinstance(acc_obj, Pronoun) or isinstance(dat_obj, Pronoun)
    front_time = (mode == "statement" and time is not None and not has_pronoun_obj
                  and rng.random() < 0.3)

    # ---------------- English ----------------
    person_key = "3sg" if person == "3sg" else "other"
    subj_en = subject.english()
    base, s3, past, pp = verb.en
    objs_en = []
    if dat_obj is not None and verb.frame == "ditr":
        objs_en.append(dat_obj.english())
    if acc_obj is not None:
        objs_en.append(acc_obj.english())
    if dat_obj is not None and verb.frame != "ditr":
        objs_en.append(dat_obj.english())
    tail_en = objs_en + ([place[0]] if place else []) + ([time[0]] if time and not front_time else [])
    freq_en = [frequency[0]] if frequency else []

    question = mode in ("yesno", "wh") and wh != "who"
    if tense == "present":
        main = base if person_key == "other" else s3
        if question:
            do = "does" if person_key == "3sg" else "do"
            head_en = [do, subj_en] + freq_en + [base]
        elif negated:
            do = "does not" if person_key == "3sg" else "do not"
            head_en = [subj_en, do, base]
        else:
            head_en = [subj_en] + freq_en + [main]
    elif tense == "past":
        if question:
            head_en = ["did", subj_en, base]
        elif negated:
            head_en = [subj_en, "did not", base]
        else:
            head_en = [subj_en, past]
    elif tense == "perfect":
        have = "has" if person_key == "3sg" else "have"
        if question:
            head_en = [have, subj_en, pp]
        else:
            head_en = [subj_en, have] + (["not"] if negated else []) + [pp]
    else:
        pos, neg, _ = MODALS[modal]
        if question:
            if modal == "want":
                do = "does" if person_key == "3sg" else "do"
                head_en = [do, subj_en, "want to", base]
            else:
                head_en = [modal, subj_en, base]
        else:
            head_en = [subj_en, (neg if negated else pos)[person_key], base]
    wh_en = {"where": "where", "when": "when", "why": "why", "what": "what", "whom_acc": "who",
             "whom_dat": "who", "how_many": "how many"}.get(wh, "")
    words_en = []
    if front_time:
        words_en.append(time[0])
    if wh_en:
        words_en.append(wh_en)
        if wh == "how_many":
            words_en.append(how_many_np.noun.en_pl)
    words_en += head_en + tail_en
    en = " ".join(words_en) + ("?" if mode != "statement" else ".")

    # ---------------- German ----------------
    subj_de = subject.german("nom")
    if tense == "present":
        finite = _de_finite(verb.de, person)
        final = [verb.prefix] if verb.prefix else []
    elif tense == "past" or tense == "perfect":
        finite = _de_aux(verb.aux, person)
        final = [verb.participle]
    else:
        finite = _de_finite(MODALS[modal][2], person)
        final = [verb.prefix + verb.de[0]]

    # middle field: pronoun objects, time, frequency, dative, accusative, nicht, place
    negate_with_kein = False
    acc_de = dat_de = None
    if acc_obj is not None:
        negate_with_kein = negated and isinstance(acc_obj, NounPhrase) and acc_obj.det == "a"
        acc_de = acc_obj.german("acc", negated=negate_with_kein)
    if dat_obj is not None:
        use_kein = negated and acc_obj is None and isinstance(dat_obj, NounPhrase) and dat_obj.det == "a"
        negate_with_kein = negate_with_kein or use_kein
        dat_de = dat_obj.german("dat", negated=use_kein)
    middle = []
    if isinstance(dat_obj, Pronoun):
        middle.append(dat_de)
    if isinstance(acc_obj, Pronoun):
        middle.append(acc_de)
    if time and not front_time:
        middle.append(time[1])
    if frequency:
        middle.append(frequency[1])
    if isinstance(dat_obj, NounPhrase):
        middle.append(dat_de)
    if isinstance(acc_obj, NounPhrase):
        middle.append(acc_de)
    if negated and not negate_with_kein:
        middle.append("nicht")
    if place:
        middle.append(place[1])

    if wh:
        wh_de = {"where": "wo", "when": "wann", "why": "warum", "what": "was", "whom_acc": "wen",
                 "whom_dat": "wem", "who": ""}.get(wh, "")
        if wh == "how_many":
            wh_de = "wie viele " + how_many_np.noun.de_pl
        if wh == "who":
            words_de = ["wer", finite] + middle + final
        else:
            words_de = [wh_de, finite, subj_de] + middle + final
    elif mode == "yesno":
        words_de = [finite, subj_de] + middle + final
    elif front_time:
        words_de = [time[1], finite, subj_de] + middle + final
    else:
        words_de = [subj_de, finite] + middle + final
    de = " ".join(w for w in words_de if w) + ("?" if mode != "statement" else ".")
    kind = "statement" if mode == "statement" else mode
    return Sentence(_capitalise(en), _capitalise(de), kind)


def random_sentence(rng: random.Random, style: Style = "any") -> Sentence:
    mode = _statement_or_question(rng, style)
    if rng.random() < 0.15:
        return _predicate_sentence(rng, mode)
    return _verb_sentence(rng, mode)


# --------------------------------------------------------------------------
# Splits and corpus files
# --------------------------------------------------------------------------


def split_of(en: str) -> Split:
    """Fixed split of an English sentence: 3 % test, 3 % dev, the rest train."""
    bucket = int(hashlib.sha1(en.encode()).hexdigest()[:8], 16) % 100
    return "test" if bucket < 3 else ("dev" if bucket < 6 else "train")


def generate(split: Split, n: int, seed: int = 0, style: Style = "any",
             max_words: int | None = None) -> list[tuple[str, str]]:
    """`n` distinct (English, German) pairs of one split, deterministic in (split, n, seed, style)."""
    rng = random.Random(f"{seed}-{style}")
    seen: set[str] = set()
    pairs = []
    tries = 0
    while len(pairs) < n:
        tries += 1
        if tries > 200 * n + 100_000:
            raise RuntimeError(f"grammar ran out of distinct {split} sentences after {len(pairs)}")
        s = random_sentence(rng, style)
        if s.en in seen or split_of(s.en) != split:
            continue
        if max_words is not None and len(s.en.split()) > max_words:
            continue
        seen.add(s.en)
        pairs.append((s.en, s.de))
    return pairs


def iter_sentences(seed: int = 0, style: Style = "any") -> Iterator[Sentence]:
    rng = random.Random(f"{seed}-{style}")
    while True:
        yield random_sentence(rng, style)


def write_tsv(pairs: list[tuple[str, str]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{en}\t{de}\n" for en, de in pairs), encoding="utf-8")


def read_tsv(path: Path) -> list[tuple[str, str]]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t")) for line in lines if line]  # type: ignore[misc]


DEV_SIZE = 500
TEST_SIZE = 500
MAX_WORDS = 13  # keeps a spoken sentence inside the ASR model's 8 s window


def write_corpus(out_dir: Path = Path("assets/demo/corpus"), seed: int = 0) -> dict[str, Path]:
    """Write the fixed dev and test files; train is regenerated on demand by `generate`."""
    out = {}
    for split, size in (("dev", DEV_SIZE), ("test", TEST_SIZE)):
        path = Path(out_dir) / f"{split}.tsv"
        write_tsv(generate(split, size, seed, max_words=MAX_WORDS), path)
        out[split] = path
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", default="assets/demo/corpus")
    parser.add_argument("--show", type=int, default=0, help="print N train examples and exit")
    parser.add_argument("--style", default="any", choices=["any", "statement", "question"])
    args = parser.parse_args()
    if args.show:
        for en, de in generate("train", args.show, style=args.style):
            print(f"{en}\t{de}")
        return
    for split, path in write_corpus(Path(args.out_dir)).items():
        print(split, path)


if __name__ == "__main__":
    main()
