"""Hostile audio (issue 15, items 3 and 9): a file cut short fails with both durations instead of
passing as a shorter clip, and the length limit is checked from the header before decoding."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from flows.cli import app
from stages.base import ItemFailure
from stages.runtime import audio_decoding
from stages.runtime.audio_decoding import load_audio
from tests.audio_samples import tone


@pytest.fixture
def clips(tmp_path):
    sf.write(tmp_path / "whole.flac", tone(2.5), 16000)
    sf.write(tmp_path / "whole.wav", tone(2.5), 16000)
    for name in ("whole.flac", "whole.wav"):  # cut at 40 %: 1.0 of 2.5 s, as a copy that stopped
        data = (tmp_path / name).read_bytes()
        (tmp_path / name.replace("whole", "cut")).write_bytes(data[: len(data) * 2 // 5])
    return tmp_path


@pytest.mark.parametrize("name", ["cut.flac", "cut.wav"])
def test_truncated_audio_fails_with_decoded_and_declared_durations(clips, name):
    with pytest.raises(ItemFailure, match=r"truncated: decoded 1\.0\d s of the 2\.50 s its header declares"):
        load_audio(str(clips / name))


@pytest.mark.parametrize("name", ["whole.flac", "whole.wav"])
def test_whole_files_still_decode_to_their_length(clips, name):
    assert len(load_audio(str(clips / name))) == 40_000


def test_truncated_clips_are_item_errors_through_the_cli(clips, tmp_path):
    res = CliRunner().invoke(app, ["run", "tests.hostile.hostile_toys:clip_seconds", str(clips), "--out",
                                   str(tmp_path / "runs"), "--job-id", "j"], catch_exceptions=False)
    assert res.exit_code == 3, res.output
    job = tmp_path / "runs" / "j"
    ok = {r["id"] for r in map(json.loads, (job / "outputs.jsonl").read_text().splitlines())}
    errors = {e["item_id"]: e for e in map(json.loads, (job / "errors.jsonl").read_text().splitlines())}
    assert ok == {"whole.flac", "whole.wav"}
    assert set(errors) == {"cut.flac", "cut.wav"} and all("truncated" in e["message"] for e in errors.values())


def _wav_claiming(seconds: float, holding: float) -> bytes:
    """A 16 kHz mono PCM WAV whose header declares `seconds` of audio but holds only `holding`."""
    pcm = (tone(holding) * 32767).astype("<i2").tobytes()
    declared = int(seconds * 16000) * 2
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + declared) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", declared) + pcm)


def test_the_limit_is_checked_from_the_header_before_decoding(tmp_path, monkeypatch):
    sf.write(tmp_path / "long.flac", tone(20.0), 16000)
    (tmp_path / "claims_5h.wav").write_bytes(_wav_claiming(5 * 3600, 1.0))

    def no_decoding(*args):
        raise AssertionError("decoded a file the header already refused")

    monkeypatch.setattr(audio_decoding, "_decode_soundfile", no_decoding)
    monkeypatch.setattr(audio_decoding, "_decode_ffmpeg", no_decoding)
    with pytest.raises(ItemFailure, match="audio is 20 s long .its header declares., over the limit of 15 s"):
        load_audio(str(tmp_path / "long.flac"), max_seconds=15)
    with pytest.raises(ItemFailure, match="audio is 18000 s long .its header declares., over the limit of 60 s"):
        load_audio(str(tmp_path / "claims_5h.wav"), max_seconds=60)


def test_a_header_that_claims_more_than_the_file_holds_is_truncated(tmp_path):
    (tmp_path / "claims_3s.wav").write_bytes(_wav_claiming(3.0, 1.0))
    with pytest.raises(ItemFailure, match=r"decoded 1\.00 s of the 3\.00 s"):
        load_audio(str(tmp_path / "claims_3s.wav"))


def test_formats_libsndfile_does_not_read_are_limited_by_ffmpeg(audio_dir):
    # m4a goes through ffmpeg: its container's duration refuses it, and it is decoded no further than needed.
    with pytest.raises(ItemFailure, match="over the limit of 1 s"):
        load_audio(str(audio_dir / "ok_e.m4a"), max_seconds=1)
    assert abs(len(load_audio(str(audio_dir / "ok_e.m4a"), max_seconds=5)) / 16000 - 2.0) < 0.08


def test_max_seconds_is_a_pipeline_parameter(tmp_path):
    from pipelines.catalog import resolve

    for name in ("transcribe", "speech-translation"):
        pipe = resolve(name, {"max_seconds": "30"})
        assert pipe.nodes["asr"].stage.config.max_seconds == 30.0
    np.testing.assert_equal(resolve("transcribe").nodes["asr"].stage.config.max_seconds, 4 * 3600)
