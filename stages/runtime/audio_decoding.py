"""Decode any audio file to 16 kHz mono float32, without system packages.

soundfile (libsndfile, shipped in its wheel) reads WAV/FLAC/OGG/MP3; anything
else (m4a, aac, webm, ...) goes through the ffmpeg binary bundled with
imageio-ffmpeg. Resampling uses soxr.
"""
from __future__ import annotations

import io
import os
import re
import struct
import subprocess

import fsspec
import numpy as np

from stages.base import ItemFailure

SAMPLE_RATE = 16_000


def load_audio(uri: str, max_seconds: float | None = None) -> np.ndarray:
    """Mono float32 samples at 16 kHz. Raises ItemFailure with a plain reason for bad files.

    The duration the header declares is checked against `max_seconds` before anything is decoded,
    and against the decoded length after: a file cut short (a copy that stopped, a FLAC that lost
    sync) fails with both durations instead of passing as a shorter clip.
    """
    if "://" not in uri and os.path.exists(uri) and not os.path.isfile(uri):  # a FIFO would block open()
        raise ItemFailure(f"cannot read {uri}: not a regular file", kind="bad_input")
    try:
        with fsspec.open(uri, "rb") as f:
            declared = _declared_seconds(f)
            if max_seconds is not None and declared is not None and declared > max_seconds:
                raise _too_long(declared, max_seconds, "its header declares")
            data = f.read()
    except FileNotFoundError:
        raise ItemFailure(f"audio file not found: {uri}", kind="bad_input") from None
    except OSError as exc:
        raise ItemFailure(f"cannot read {uri}: {exc}", kind="bad_input") from None
    if not data:
        raise ItemFailure(f"audio file is empty (0 bytes): {uri}", kind="bad_input")
    try:
        samples, rate = _decode_soundfile(data)
    except Exception:  # noqa: BLE001 - not a format libsndfile knows, or damaged; ask ffmpeg
        samples, ffmpeg_declared = _decode_ffmpeg(data, uri, max_seconds)
        rate, declared = SAMPLE_RATE, declared or ffmpeg_declared
    if samples.size == 0:
        raise ItemFailure(f"audio has no samples (zero length): {uri}", kind="bad_input")
    if not np.isfinite(samples).all():
        raise ItemFailure(f"audio contains NaN or infinite samples: {uri}", kind="bad_input")
    seconds = samples.shape[0] / rate
    if max_seconds is not None and declared is not None and declared > max_seconds:  # known only to ffmpeg
        raise _too_long(declared, max_seconds, "its header declares")
    if declared is not None and seconds < declared - (0.1 + 0.001 * declared):  # codecs pad a few ms
        raise ItemFailure(f"audio is truncated: decoded {seconds:.2f} s of the {declared:.2f} s its header "
                          f"declares: {uri}", kind="bad_input")
    if max_seconds is not None and seconds > max_seconds:
        raise _too_long(seconds, max_seconds, "it is")
    if rate != SAMPLE_RATE:
        import soxr

        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(samples, dtype=np.float32)


def _too_long(seconds: float, limit: float, how: str) -> ItemFailure:
    return ItemFailure(f"audio is {seconds:.0f} s long ({how}), over the limit of {limit:.0f} s "
                       "(raise max_seconds, e.g. -p max_seconds=N)", kind="bad_input")


def _declared_seconds(f) -> float | None:
    """The duration a file's header declares, read without decoding; None when it names none."""
    try:
        head = f.read(1 << 16)
        seconds = _wav_seconds(head)
        if seconds is None and head:
            import soundfile as sf

            f.seek(0)
            info = sf.info(f)
            seconds = info.frames / info.samplerate if 0 < info.frames < 1 << 62 and info.samplerate else None
    except Exception:  # noqa: BLE001 - no header libsndfile knows: ffmpeg may still name a duration
        seconds = None
    f.seek(0)
    return seconds


def _wav_seconds(head: bytes) -> float | None:
    """Seconds of PCM/float WAV data its chunk sizes declare. libsndfile reports only what the file holds."""
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, fmt = 12, None
    while pos + 8 <= len(head):
        chunk, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk == b"fmt " and pos + 22 <= len(head):
            fmt = struct.unpack_from("<HHIIH", head, pos + 8)  # tag, channels, rate, bytes/s, block align
        elif chunk == b"data":
            if fmt is None or fmt[0] not in (1, 3, 0xFFFE) or not fmt[2] or not fmt[4] or size in (0, 0xFFFFFFFF):
                return None  # compressed, or a streamed file that never wrote its size
            return size // fmt[4] / fmt[2]
        pos += 8 + size + (size & 1)
    return None


def _decode_soundfile(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples.mean(axis=1), rate  # mix channels to mono


def _decode_ffmpeg(data: bytes, uri: str, max_seconds: float | None) -> tuple[np.ndarray, float | None]:
    """Samples, and the duration the container declares (None when unknown or only estimated)."""
    import imageio_ffmpeg

    limit = ["-t", f"{max_seconds + 1:.3f}"] if max_seconds is not None else []  # decode no more than needed
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info",
           "-i", "pipe:0", *limit, "-f", "s16le", "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"]
    proc = subprocess.run(cmd, input=data, capture_output=True, timeout=600)
    log = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        errors = [line.split("] ", 1)[-1] for line in log.splitlines() if "[error]" in line or "[fatal]" in line]
        reason = errors[-1] if errors else f"ffmpeg exit code {proc.returncode}"
        raise ItemFailure(f"cannot decode audio {uri}: not a readable audio file ({reason})", kind="bad_input")
    found = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", log)
    declared = None
    if found and "Estimating duration from bitrate" not in log:
        h, m, sec = found.groups()
        declared = int(h) * 3600 + int(m) * 60 + float(sec)
    return np.frombuffer(proc.stdout, np.int16).astype(np.float32) / 32768.0, declared


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
