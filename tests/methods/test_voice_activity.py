"""Voice-activity regions on constructed audio: boundaries known to the sample, noise and silence refused."""
from __future__ import annotations

import numpy as np
import pytest

from stages.methods.voice_activity import VoiceActivityOptions, speech_regions, why_no_speech

RATE = 16_000
EXACT = VoiceActivityOptions(pad=0.0)


def burst(seconds: float, freq: float = 300.0, level: float = 0.3) -> np.ndarray:
    """A harmonic tone (a crude vowel): loud, and far from a flat spectrum."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 5))).astype(np.float32)


def gap(seconds: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    return (noise * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def test_tone_bursts_between_silences_are_found_within_30_ms():
    parts = [gap(0.5), burst(1.2), gap(0.8), burst(0.4, 500), gap(1.5), burst(2.0, 200), gap(0.3)]
    truth, t = [], 0.0
    for p in parts:
        if p.any():
            truth.append((t, t + len(p) / RATE))
        t += len(p) / RATE
    found = [(s / RATE, e / RATE) for s, e in speech_regions(np.concatenate(parts), RATE, EXACT)]
    assert len(found) == len(truth)
    for (s, e), (ts, te) in zip(found, truth):
        assert abs(s - ts) <= 0.03 and abs(e - te) <= 0.03, (s, e, ts, te)


def test_bursts_over_a_quiet_noise_floor_are_still_found():
    rng_floor = 0.003  # about -50 dBFS of hiss under the whole file
    audio = np.concatenate([gap(0.6), burst(1.0), gap(0.7), burst(1.0, 450), gap(0.6)])
    audio = audio + gap(len(audio) / RATE, rng_floor, seed=3)
    found = [(round(s / RATE, 2), round(e / RATE, 2)) for s, e in speech_regions(audio, RATE, EXACT)]
    assert len(found) == 2
    assert found[0] == pytest.approx((0.6, 1.6), abs=0.03) and found[1] == pytest.approx((2.3, 3.3), abs=0.03)


def test_padding_widens_regions_and_merges_neighbours():
    audio = np.concatenate([gap(0.5), burst(0.5), gap(0.15), burst(0.5), gap(0.5)])
    assert len(speech_regions(audio, RATE, EXACT)) == 1  # a 0.15 s gap is shorter than min_pause: bridged
    wide = speech_regions(audio, RATE, VoiceActivityOptions(pad=0.2))
    assert [(round(s / RATE, 2), round(e / RATE, 2)) for s, e in wide] == [(0.3, 1.85)]


@pytest.mark.parametrize("audio, reason", [
    (gap(20.0), "digital silence"),
    (gap(5.0, 0.001), "silence"),  # -60 dBFS hiss: under the floor
    (gap(5.0, 0.1, seed=1), "only noise"),  # loud white noise: flat spectrum
    (gap(5.0, 0.5, seed=2), "only noise"),
    (burst(0.05), "shorter than a word"),
    (np.concatenate([gap(1.0), burst(0.05), gap(1.0)]), "long enough"),  # a click, not a word
])
def test_silence_noise_and_blips_have_no_speech_and_a_reason(audio, reason):
    assert speech_regions(audio, RATE) == []
    assert reason in why_no_speech(audio, RATE)


def test_out_of_range_audio_does_not_overflow():
    loud = (1e30 * burst(1.0)).astype(np.float32)
    assert len(speech_regions(loud, RATE, EXACT)) == 1  # float64 levels: no inf, no NaN
