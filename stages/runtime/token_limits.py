"""The length check stages make before a model sees a batch: a text over the limit fails alone, the rest go on."""
from __future__ import annotations

from stages.base import ItemFailure


def fit_token_limit(tok, texts: list[str], limit: int, message: str) -> tuple[list, list[int]]:
    """(results: an ItemFailure where a text is too long, else None; the indices of the texts that fit).

    `message` names the limit for the user, formatted with the text's token count `n` and `limit`.
    """
    results: list = [None] * len(texts)
    fits = []
    for i, text in enumerate(texts):
        n = len(tok(text)["input_ids"])
        if n > limit:
            results[i] = ItemFailure(message.format(n=n, limit=limit))
        else:
            fits.append(i)
    return results, fits
