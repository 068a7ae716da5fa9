"""Synthetic audio files for tests: good clips in many formats, and many kinds of bad ones."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float, rate: int = 16000, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """A gliding tone with a little noise: not speech, but a non-trivial spectrum."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    sweep = np.sin(2 * np.pi * (freq + 200 * np.sin(2 * np.pi * 0.7 * t)) * t)
    return (0.3 * sweep + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def make_clips(root: Path) -> Path:
    sf.write(root / "ok_a.wav", tone(2.0, seed=1), 16000)
    sf.write(root / "ok_b.flac", tone(3.0, freq=300, seed=2), 16000)
    sf.write(root / "ok_c.ogg", tone(1.5, freq=600, seed=3), 16000, format="OGG", subtype="VORBIS")
    sf.write(root / "ok_d.mp3", tone(2.5, freq=500, seed=4), 16000, format="MP3", subtype="MPEG_LAYER_III")
    sf.write(root / "rate8k.wav", tone(2.0, rate=8000, seed=5), 8000)
    stereo = np.stack([tone(2.0, rate=48000, seed=6), tone(2.0, rate=48000, freq=220, seed=7)], axis=1)
    sf.write(root / "stereo48k.wav", stereo, 48000)
    sf.write(root / "silence.wav", np.zeros(32000, np.float32), 16000)
    sf.write(root / "long10min.flac", (0.5 * tone(600.0, freq=350, seed=8)).astype(np.float32), 16000)
    sf.write(root / "medium10s.wav", tone(10.0, freq=400, seed=9), 16000)
    sf.write(root / "zero_len.wav", np.zeros(0, np.float32), 16000)
    (root / "empty.wav").write_bytes(b"")
    (root / "corrupt.wav").write_bytes(b"RIFF\xff\xff\x00\x00WAVEfmt " + np.random.default_rng(0).bytes(3000))
    (root / "not_audio.wav").write_text("this is a text file, not audio\n" * 20)
    _ffmpeg_m4a(root / "ok_a.wav", root / "ok_e.m4a")
    return root


def _ffmpeg_m4a(src: Path, dst: Path) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(src),
                    "-c:a", "aac", "-b:a", "64k", str(dst)], check=True)
