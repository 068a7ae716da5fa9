"""Which languages a translation model writes, read from its files before any weights load.

A multilingual model names its target languages with tokens: M2M100 `__fr__`, NLLB `fra_Latn`,
mBART-50 `fr_XX`, multi-target Marian `>>fra<<`. A single-pair model says its target in its
tokenizer_config.json or config.json (`target_lang`), or in its name (`opus-mt-en-de`). Codes are
compared with langcodes, so `de`, `deu` and `ger` are one language.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import langcodes

# The code part of each language-token shape; a match must also be a valid language code.
_TOKEN_SHAPES = (
    re.compile(r"__([a-z]{2,3})__"),  # M2M100
    re.compile(r">>([a-z]{2,3}(?:_[A-Z][a-z]{3})?)<<"),  # multi-target Marian
    re.compile(r"([a-z]{3}_[A-Z][a-z]{3})"),  # NLLB / FLORES
    re.compile(r"([a-z]{2}_[A-Z]{2})"),  # mBART-50
)
_NAME_PAIR = re.compile(r"(?:^|[-_.])([a-z]{2,3})-([a-z]{2,3})$")  # opus-mt-en-de, mt-en-de
_NOT_ONE_LANGUAGE = {"mul", "und", "mis", "zxx"}


def parse_language(code: str) -> langcodes.Language:
    """A valid language code (ISO 639, BCP 47 such as pt-BR, NLLB fra_Latn); ValueError otherwise."""
    try:
        lang = langcodes.Language.get(code.replace("_", "-"))
    except ValueError:  # langcodes.tag_parser.LanguageTagError is one
        lang = None
    if lang is None or not lang.is_valid() or not lang.language:
        raise ValueError(f"unknown language code {code!r} (use an ISO 639 code such as 'de' or 'fra')")
    return lang


def _language_or_none(code: str) -> langcodes.Language | None:
    try:
        return parse_language(code)
    except ValueError:
        return None


def same_language(a: langcodes.Language, b: langcodes.Language) -> bool:
    return a.language == b.language


def language_tokens(vocab) -> dict[str, langcodes.Language]:
    """Vocabulary tokens that name a language, with that language."""
    found = {}
    for token in vocab:
        for shape in _TOKEN_SHAPES:
            m = shape.fullmatch(token)
            if m:
                lang = _language_or_none(m.group(1))
                if lang is not None and lang.language not in _NOT_ONE_LANGUAGE:
                    found[token] = lang
                break
    return found


def pick_language_token(tokens: dict[str, langcodes.Language], code: str) -> str | None:
    """The token for `code` (its script preferred: zh -> zho_Hans over zho_Hant), or None."""
    want = parse_language(code)
    matches = [t for t, lang in tokens.items() if same_language(lang, want)]
    script = want.maximize().script
    return next((t for t in matches if tokens[t].maximize().script == script), matches[0] if matches else None)


def declared_target(model: str) -> tuple[str, str] | None:
    """(target code, where it was found) from a single-pair model's files or name, or None."""
    path = Path(model).expanduser()
    for file in ("tokenizer_config.json", "config.json", "generation_config.json"):
        try:
            value = json.loads((path / file).read_text()).get("target_lang")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str) and _language_or_none(value):
            return value, f"{file} target_lang"
    m = _NAME_PAIR.search(path.name if path.exists() else model.rstrip("/").rsplit("/", 1)[-1])
    # Only codes with an ISO 639-1 form: 'opus-mt-en-zle' names a family (East Slavic), not one target.
    langs = [_language_or_none(c) for c in m.groups()] if m else []
    if langs and all(lang is not None and len(lang.language) == 2 for lang in langs):
        return m.group(2), "its name"
    return None


def check_target_language(model: str, target: str, vocab) -> None:
    """ValueError when `model` (with tokenizer vocabulary `vocab`, None if unreadable) cannot write `target`."""
    want = parse_language(target)
    tokens = language_tokens(vocab or {})
    if tokens:
        if pick_language_token(tokens, target) is None:
            known = ", ".join(sorted(tokens)[:12]) + (" ..." if len(tokens) > 12 else "")
            raise ValueError(f"target language {target!r}: model {model} has no token for it (it has {known})")
        return
    declared = declared_target(model)
    if declared and not same_language(parse_language(declared[0]), want):
        raise ValueError(f"target language {target!r}: model {model} translates into {declared[0]!r} "
                         f"(from {declared[1]}); pick a model for {target!r}")
