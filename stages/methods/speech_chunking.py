"""Pack speech regions into decoder chunks of at most one window ("VAD cut & merge").

Whisper's encoder always sees one fixed window, so the cheapest long-form
decode fills each window with as much speech as fits, and skips the silence
between. Chunks are cut only in pauses, so each chunk's words are whole and the
chunk texts can simply be joined. A region longer than a window has no pause
to cut at; it is cut at its quietest frame near the window's end.
"""
from __future__ import annotations

import numpy as np

from stages.runtime.audio_decoding import split_windows


def pack_chunks(regions: list[tuple[int, int]], samples: np.ndarray, max_len: int,
                max_pause: int | None = None) -> list[tuple[int, int]]:
    """(start, end) sample ranges, in order, each at most `max_len` long, covering every region.

    Neighbouring regions share a chunk while the chunk fits in `max_len` and
    the pause between them is shorter than `max_pause` samples (None = any).
    """
    pieces: list[tuple[int, int]] = []
    for start, end in regions:
        offset = start
        for part in split_windows(samples[start:end], max_len):
            pieces.append((offset, offset + len(part)))
            offset += len(part)
    chunks: list[tuple[int, int]] = []
    for start, end in pieces:
        if chunks:
            first, last = chunks[-1]
            if end - first <= max_len and (max_pause is None or start - last < max_pause) and start >= last:
                chunks[-1] = (first, end)
                continue
        chunks.append((start, end))
    return chunks
