"""Chunk packing: never over one window, cut only in pauses, every speech sample decoded exactly once."""
from __future__ import annotations

import numpy as np

from stages.methods.speech_chunking import pack_chunks
from stages.methods.voice_activity import VoiceActivityOptions, speech_regions
from tests.methods.test_voice_activity import RATE, burst, gap


def _talk(seed: int, n: int = 40) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Utterances of 0.3-6 s with pauses of 0.3-2 s; returns audio and the true utterance spans."""
    rng = np.random.default_rng(seed)
    parts, spans, t = [gap(0.4)], [], int(0.4 * RATE)
    for _ in range(n):
        b = burst(float(rng.uniform(0.3, 6.0)), float(rng.uniform(150, 400)))
        spans.append((t, t + len(b)))
        pause = gap(float(rng.uniform(0.3, 2.0)))
        parts += [b, pause]
        t += len(b) + len(pause)
    return np.concatenate(parts), spans


def test_chunks_fit_one_window_and_cut_only_in_pauses():
    audio, spans = _talk(seed=0)
    window = 30 * RATE
    chunks = pack_chunks(speech_regions(audio, RATE), audio, window)
    assert all(0 < e - s <= window for s, e in chunks)
    assert all(e1 <= s2 for (_, e1), (s2, _) in zip(chunks, chunks[1:]))  # in order, disjoint
    for s, e in spans:  # every utterance lies whole inside one chunk
        assert sum(cs <= s and e <= ce for cs, ce in chunks) == 1, (s, e)
    assert len(chunks) <= int(np.ceil(sum(e - s for s, e in spans) / (0.6 * window))) + 1  # packed, not one per utterance


def test_a_long_pause_always_starts_a_new_chunk():
    audio = np.concatenate([gap(0.5), burst(2.0), gap(4.0), burst(2.0), gap(1.0), burst(2.0), gap(0.5)])
    regions = speech_regions(audio, RATE, VoiceActivityOptions(pad=0.0))
    assert len(pack_chunks(regions, audio, 30 * RATE)) == 1
    chunks = pack_chunks(regions, audio, 30 * RATE, max_pause=3 * RATE)
    assert [(round(s / RATE, 2), round(e / RATE, 2)) for s, e in chunks] == [(0.5, 2.5), (6.5, 11.5)]


def test_speech_without_pauses_is_cut_at_its_quietest_point_and_nothing_is_lost():
    quiet_at = int(7.3 * RATE)
    audio = burst(12.0)
    audio[quiet_at - 400:quiet_at + 400] *= 0.05  # one soft spot, no real pause
    window = 8 * RATE
    chunks = pack_chunks([(0, len(audio))], audio, window)
    assert all(e - s <= window for s, e in chunks)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(audio)
    assert all(e1 == s2 for (_, e1), (s2, _) in zip(chunks, chunks[1:]))  # contiguous: no sample lost or doubled
    assert abs(chunks[0][1] - quiet_at) <= 400
