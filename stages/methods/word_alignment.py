"""Word timestamps for a decoded chunk, from openai-whisper's cross-attention alignment (`whisper.timing`).

Whisper's alignment heads attend from each text token to the audio frames it
was read from; dynamic time warping over their attention gives each word a
start and an end. One extra forward pass per chunk, after decoding, so only
runs that ask for word times pay for it. Checkpoints without a stored head
set use whisper's default (every head of the upper half of the decoder).
"""
from __future__ import annotations

import torch
from whisper.audio import HOP_LENGTH, SAMPLE_RATE
from whisper.timing import find_alignment, merge_punctuations

# whisper.transcribe's defaults: punctuation rides with the word next to it
PREPEND = "\"'“¿([{-"
APPEND = "\"'.。,，!！?？:：”)]}、"


def align_words(model, tokenizer, tokens: list[int], mel: torch.Tensor, n_samples: int,
                offset: float = 0.0) -> list[tuple[str, float, float, float]]:
    """(word, start, end, probability) for `tokens` decoded from `mel` (one chunk of `n_samples`),
    times in seconds plus `offset`, clamped to the chunk."""
    timings = find_alignment(model, tokenizer, tokens, mel, n_samples // HOP_LENGTH)
    merge_punctuations(timings, PREPEND, APPEND)
    length = n_samples / SAMPLE_RATE
    return [(w.word, offset + min(float(w.start), length), offset + min(float(w.end), length), float(w.probability))
            for w in timings if w.word]
