"""Decode any audio file to 16 kHz mono float32, without system packages.

soundfile (libsndfile, shipped in its wheel) reads WAV/FLAC/OGG/MP3; anything
else (m4a, aac, webm, ...) goes through the ffmpeg binary bundled with
imageio-ffmpeg. Resampling uses soxr.
"""
from __future__ import annotations

import io
import subprocess

import fsspec
import numpy as np

from stages.base import ItemFailure

SAMPLE_RATE = 16_000


def load_audio(uri: str, max_seconds: float | None = None) -> np.ndarray:
    """Mono float32 samples at 16 kHz. Raises ItemFailure with a plain reason for bad files."""
    try:
        with fsspec.open(uri, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ItemFailure(f"audio file not found: {uri}", kind="bad_input") from None
    except OSError as exc:
        raise ItemFailure(f"cannot read {uri}: {exc}", kind="bad_input") from None
    if not data:
        raise ItemFailure(f"audio file is empty (0 bytes): {uri}", kind="bad_input")
    try:
        samples, rate = _decode_soundfile(data)
    except Exception:  # noqa: BLE001 - not a format libsndfile knows; ask ffmpeg
        samples, rate = _decode_ffmpeg(data, uri), SAMPLE_RATE
    if samples.size == 0:
        raise ItemFailure(f"audio has no samples (zero length): {uri}", kind="bad_input")
    if not np.isfinite(samples).all():
        raise ItemFailure(f"audio contains NaN or infinite samples: {uri}", kind="bad_input")
    seconds = samples.shape[0] / rate
    if max_seconds is not None and seconds > max_seconds:
        raise ItemFailure(f"audio is {seconds:.0f} s long, over the limit of {max_seconds:.0f} s "
                          "(raise max_seconds in the stage config)", kind="bad_input")
    if rate != SAMPLE_RATE:
        import soxr

        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(samples, dtype=np.float32)


def _decode_soundfile(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples.mean(axis=1), rate  # mix channels to mono


def _decode_ffmpeg(data: bytes, uri: str) -> np.ndarray:
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", "pipe:0",
           "-f", "s16le", "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"]
    proc = subprocess.run(cmd, input=data, capture_output=True, timeout=600)
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        reason = reason[-1] if reason else f"ffmpeg exit code {proc.returncode}"
        raise ItemFailure(f"cannot decode audio {uri}: not a readable audio file ({reason})", kind="bad_input")
    return np.frombuffer(proc.stdout, np.int16).astype(np.float32) / 32768.0


def split_windows(samples: np.ndarray, window: int, search: float = 0.25, hop: int = 160) -> list[np.ndarray]:
    """Cut long audio into pieces of at most `window` samples, at the quietest point near each end.

    Cutting in a pause (lowest RMS in the last `search` fraction of the window)
    keeps words whole, so transcripts of the pieces can simply be joined.
    """
    pieces, start, n = [], 0, len(samples)
    while n - start > window:
        lo = start + int(window * (1 - search))
        region = samples[lo:start + window]
        frames = len(region) // hop
        if frames == 0:
            cut = start + window
        else:
            energy = (region[: frames * hop].reshape(frames, hop) ** 2).mean(axis=1)
            cut = lo + int(np.argmin(energy)) * hop + hop // 2
        pieces.append(samples[start:cut])
        start = cut
    pieces.append(samples[start:])
    return pieces
