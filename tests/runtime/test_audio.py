"""Audio decoding: formats, rates, channels, and a clear error for every kind of bad file."""
from __future__ import annotations

import numpy as np
import pytest

from stages.runtime.audio_decoding import load_audio, split_windows
from stages.base import ItemFailure
from tests.audio_samples import tone


@pytest.mark.parametrize("name, seconds", [("ok_a.wav", 2.0), ("ok_b.flac", 3.0), ("ok_c.ogg", 1.5),
                                           ("ok_d.mp3", 2.5), ("ok_e.m4a", 2.0), ("rate8k.wav", 2.0),
                                           ("stereo48k.wav", 2.0), ("silence.wav", 2.0)])
def test_formats_rates_and_channels_become_16k_mono(audio_dir, name, seconds):
    samples = load_audio(str(audio_dir / name))
    assert samples.ndim == 1 and samples.dtype == np.float32
    assert abs(len(samples) / 16000 - seconds) < 0.08  # compressed formats pad a few ms


def test_resampling_keeps_the_signal(audio_dir):
    ref = tone(2.0, rate=16000, seed=5)
    got = load_audio(str(audio_dir / "rate8k.wav"))
    # An 8 kHz copy of the same tone, brought to 16 kHz, stays strongly correlated with it.
    n = min(len(ref), len(got))
    assert np.corrcoef(ref[:n], got[:n])[0, 1] > 0.9


def test_stereo_is_mixed_to_mono(audio_dir):
    left, right = tone(2.0, rate=48000, seed=6), tone(2.0, rate=48000, freq=220, seed=7)
    import soxr

    expected = soxr.resample((left + right) / 2, 48000, 16000, quality="HQ")
    got = load_audio(str(audio_dir / "stereo48k.wav"))
    assert np.abs(got[: len(expected)] - expected[: len(got)]).max() < 1e-3


@pytest.mark.parametrize("name, needle", [
    ("empty.wav", "empty (0 bytes)"), ("zero_len.wav", "zero length"), ("corrupt.wav", "cannot decode audio"),
    ("not_audio.wav", "cannot decode audio"), ("missing.wav", "not found")])
def test_bad_files_raise_item_failures(audio_dir, name, needle):
    with pytest.raises(ItemFailure, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_audio(str(audio_dir / name))


def test_max_seconds_refuses_long_audio(audio_dir):
    with pytest.raises(ItemFailure, match="over the limit"):
        load_audio(str(audio_dir / "medium10s.wav"), max_seconds=5)


def test_split_windows_cuts_in_pauses_and_loses_nothing():
    rng = np.random.default_rng(0)
    loud = lambda n: rng.standard_normal(n).astype(np.float32)  # noqa: E731
    samples = np.concatenate([loud(7000), np.zeros(1000, np.float32), loud(9000)])
    pieces = split_windows(samples, window=8000)
    assert len(pieces) == 3 or len(pieces) == 2
    assert sum(map(len, pieces)) == len(samples)
    assert all(len(p) <= 8000 for p in pieces)
    assert 7000 <= len(pieces[0]) <= 8000  # cut inside the silent stretch
    assert np.abs(samples[len(pieces[0]) - 50: len(pieces[0]) + 50]).max() == 0
