"""Energy-and-spectrum voice-activity detection: where in a file is there something to transcribe.

A frame counts as active when it is loud enough (above an absolute floor and
above the file's own noise floor) and its spectrum is not flat. The flatness
test is what keeps white noise and hiss out: a periodogram of white noise has
a flatness near 0.56, voiced speech and tones stay far below. Frames are then
smoothed into regions: short gaps bridged, blips dropped.

Numpy only, no weights: it runs on any audio the decoder can read, and the
same gate also stops whisper from inventing text on silence and noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


BLOCK = 2048  # frames analysed at once (~20 s of audio, a few MB)


@dataclass(frozen=True)
class VoiceActivityOptions:
    frame: float = 0.025  # seconds per analysis frame
    hop: float = 0.010  # seconds between frames: the resolution of every boundary
    floor_db: float = -50.0  # quieter than this (dBFS) is never speech: digital silence, hum
    above_noise_db: float = 12.0  # or than this far above the file's noise floor (its 10th percentile)
    below_peak_db: float = 30.0  # ... unless that is less than this far below its loud frames
    max_flatness: float = 0.35  # spectral flatness above this is noise, not a voice
    band: tuple[float, float] = (80.0, 4000.0)  # Hz where voices put their energy
    min_speech: float = 0.10  # drop active stretches shorter than this
    min_pause: float = 0.20  # bridge gaps shorter than this
    pad: float = 0.10  # widen each region by this much on both sides (soft onsets and endings)


def frame_features(samples: np.ndarray, rate: int, opts: VoiceActivityOptions) -> tuple[np.ndarray, np.ndarray]:
    """Per hop: level in dBFS and spectral flatness (in `opts.band`) of the frame starting there."""
    win, hop = int(opts.frame * rate), int(opts.hop * rate)
    n = max(0, (len(samples) - win) // hop + 1)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    freqs = np.fft.rfftfreq(win, 1 / rate)
    band, taper = (freqs >= opts.band[0]) & (freqs <= opts.band[1]), np.hanning(win)
    level, flatness = np.empty(n), np.empty(n)
    for a in range(0, n, BLOCK):  # a block of frames at a time: memory stays flat for hours of audio
        b = min(n, a + BLOCK)
        # float64: a full-scale or out-of-range file must not overflow
        x = samples[a * hop:(b - 1) * hop + win].astype(np.float64)
        frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:b - a]
        level[a:b] = 10 * np.log10((frames ** 2).mean(axis=1) + 1e-12)
        power = np.abs(np.fft.rfft(frames * taper, axis=1))[:, band] ** 2 + 1e-20
        flatness[a:b] = np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)
    return level, flatness


def speech_regions(samples: np.ndarray, rate: int,
                   opts: VoiceActivityOptions = VoiceActivityOptions()) -> list[tuple[int, int]]:
    """Sorted, disjoint (start, end) sample ranges that hold speech-like sound, padded by `opts.pad`."""
    level, flatness = frame_features(samples, rate, opts)
    if level.size == 0:
        return []
    threshold = max(opts.floor_db, min(np.percentile(level, 10) + opts.above_noise_db,
                                       np.percentile(level, 95) - opts.below_peak_db))
    active = (level > threshold) & (flatness < opts.max_flatness)
    hop, win = int(opts.hop * rate), int(opts.frame * rate)
    # frame i covers [i*hop, i*hop + win): call its centre hop the frame's own time
    runs = _runs(active)
    regions: list[list[int]] = []
    for a, b in runs:
        start, end = _sharpen(samples, a * hop, (b - 1) * hop + win, 10 ** (threshold / 20), win)
        if regions and start - regions[-1][1] < opts.min_pause * rate:
            regions[-1][1] = end
        else:
            regions.append([start, end])
    pad, n = int(opts.pad * rate), len(samples)
    kept = [(max(0, s - pad), min(n, e + pad)) for s, e in regions if e - s >= opts.min_speech * rate]
    merged: list[tuple[int, int]] = []
    for s, e in kept:  # padding can make neighbours touch
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    return merged


def _sharpen(samples: np.ndarray, start: int, end: int, amplitude: float, win: int) -> tuple[int, int]:
    """Move a frame-resolution boundary to the first / last sample above `amplitude`: a chunk that
    starts exactly at the onset gives whisper the same mel as the clip alone."""
    head = np.flatnonzero(np.abs(samples[start:start + win]) > amplitude)
    tail = np.flatnonzero(np.abs(samples[max(start, end - win):end]) > amplitude)
    first = start + int(head[0]) if head.size else start
    last = max(start, end - win) + int(tail[-1]) + 1 if tail.size else end
    return first, max(last, first + 1)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last+1) index pairs of the True runs of a boolean array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def why_no_speech(samples: np.ndarray, rate: int, opts: VoiceActivityOptions = VoiceActivityOptions()) -> str:
    """A plain reason for a file in which `speech_regions` found nothing."""
    level, flatness = frame_features(samples, rate, opts)
    if level.size == 0 or len(samples) < opts.min_speech * rate:
        return f"no speech: the audio is {len(samples) / rate:.2f} s long, shorter than a word"
    if level.max() < -100:
        return "no speech: digital silence"
    if level.max() <= opts.floor_db:
        return f"no speech: silence (loudest frame {level.max():.0f} dBFS, below {opts.floor_db:.0f} dBFS)"
    if np.median(flatness[level > opts.floor_db]) >= opts.max_flatness:
        return "no speech: only noise (a flat spectrum, like hiss or static)"
    return "no speech: no voice-like sound long enough to be a word"
