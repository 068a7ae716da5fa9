"""Subtitles: SRT and WebVTT that real parsers read, monotonic times, the CLI flag, the artifact links."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from flows.job_flow import subtitle_rows
from flows.store import RunStore
from flows.subtitles import SubtitleFormatError, parse_formats, to_srt, to_vtt, write_subtitles
from tests.conftest import CASCADE

ROOT = Path(__file__).resolve().parents[2]
LONG = ROOT / "assets" / "demo" / "long"
CUES = [{"start": 0.0004, "end": 1.1648, "text": "Your windows are black."},
        {"start": 1.1, "end": 1.0, "text": "An overlap\n and a <tag> & -->"},  # out of order: made monotonic
        {"start": 3661.5, "end": 3663.25, "text": "Ist er jung?"}]


def _times(subs):
    return [(s.start.total_seconds(), s.end.total_seconds()) for s in subs]


def test_srt_and_vtt_parse_with_real_parsers_and_are_monotonic(tmp_path):
    import srt
    import webvtt

    parsed = list(srt.parse(to_srt(CUES)))
    (tmp_path / "a.vtt").write_text(to_vtt(CUES), encoding="utf-8")
    vtt = webvtt.read(str(tmp_path / "a.vtt"))
    assert [s.content for s in parsed] == ["Your windows are black.", "An overlap and a <tag> & -->", "Ist er jung?"]
    assert [c.text for c in vtt] == ["Your windows are black.", "An overlap and a &lt;tag&gt; &amp; --&gt;",
                                     "Ist er jung?"]
    assert [c.start for c in vtt][2] == "01:01:01.500" and [c.end for c in vtt][2] == "01:01:03.250"
    for spans in (_times(parsed), [(c.start_in_seconds + c.start_time.milliseconds / 1000,
                                    c.end_in_seconds + c.end_time.milliseconds / 1000) for c in vtt]):
        flat = [t for span in spans for t in span]
        assert flat == sorted(flat) and all(e > s for s, e in spans)


def test_write_subtitles_names_files_per_language_and_links_them(tmp_path):
    store = RunStore(str(tmp_path))
    rows = [{"id": "talk/1", "asr": {"text": "a. b.", "language": None, "segments": CUES[:1]},
             "mt": {"text": "x", "language": "de", "segments": [dict(CUES[2], source_text="b.")]}},
            {"id": "plain", "mt": {"text": "y", "language": "de", "segments": None}}]
    files = write_subtitles(store, rows, ["asr", "mt"], {"asr": "en", "mt": "de"}, ["srt", "vtt"])
    (paths,) = files.values()
    stem = paths[0].split("/")[1].split(".")[0]
    assert stem.startswith("talk_1-") and list(files) == ["talk/1"]  # a plain, unique file name
    assert sorted(p.split(".", 1)[1] for p in paths) == ["de.srt", "de.vtt", "en.srt", "en.vtt", "segments.json"]
    body = json.loads((tmp_path / paths[-1]).read_text(encoding="utf-8"))
    assert body["mt"]["segments"][0]["source_text"] == "b." and body["asr"]["language"] == "en"
    (row,) = subtitle_rows(files, str(tmp_path))
    assert row["item"] == "talk/1" and row["en.vtt"] == f"[{paths[1]}]({tmp_path.as_uri()}/{paths[1]})"
    assert set(row) == {"item", "en.srt", "en.vtt", "de.srt", "de.vtt", "segments.json"}


def test_unknown_format_is_a_usage_error():
    assert parse_formats("srt, VTT,srt") == ["srt", "vtt"] and parse_formats(None) == []
    with pytest.raises(SubtitleFormatError, match="unknown subtitle format 'ass'"):
        parse_formats("srt,ass")


@pytest.mark.skipif(not LONG.is_dir(), reason="the demo models and long demo file come with a source checkout")
def test_cli_writes_subtitles_for_long_silent_and_tiny_files(tmp_path, cli_env, monkeypatch):
    import soundfile as sf

    inputs = tmp_path / "in"
    shutil.copytree(LONG, inputs)
    sf.write(inputs / "silence.wav", np.zeros(48000, np.float32), 16000)
    sf.write(inputs / "blip.wav", 0.3 * np.sin(np.arange(800) / 3).astype(np.float32), 16000)  # 0.05 s
    manifest = (inputs / "manifest.jsonl").read_text(encoding="utf-8")
    manifest += json.dumps({"id": "silence", "audio": "silence.wav"}) + "\n"
    manifest += json.dumps({"id": "blip", "audio": "blip.wav"}) + "\n"
    (inputs / "manifest.jsonl").write_text(manifest, encoding="utf-8")
    proc = subprocess.run([*CASCADE, "run", "speech-translation", str(inputs), "--target", "de", "--out",
                           str(tmp_path / "runs"), "--job-id", "subs", "--subtitles", "srt,vtt", "--show", "0"],
                          capture_output=True, text=True, env=cli_env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = tmp_path / "runs" / "subs"
    rows = {r["id"]: r for r in map(json.loads, (job / "outputs.jsonl").read_text(encoding="utf-8").splitlines())}
    summary = json.loads((job / "summary.json").read_text(encoding="utf-8"))
    assert summary["metrics"]["wer"] <= 5.0  # whole-file WER against the whole-file ref_en
    for quiet in ("silence", "blip"):
        assert rows[quiet]["mt"]["text"] == "" and rows[quiet]["mt"]["segments"] == []
        assert rows[quiet]["asr"]["segments"] == [] and rows[quiet]["asr"]["note"]
    long = rows["long12"]
    assert len(long["mt"]["segments"]) == 12 and long["mt"]["text"] == " ".join(s["text"] for s in long["mt"]["segments"])
    import srt
    import webvtt

    de = list(srt.parse((job / "subtitles" / "long12.de.srt").read_text(encoding="utf-8")))
    en = webvtt.read(str(job / "subtitles" / "long12.en.vtt"))
    assert [s.content for s in de] == [s["text"] for s in long["mt"]["segments"]]
    assert [c.text for c in en] == [s["text"].strip() for s in long["asr"]["segments"]]
    assert sorted(summary["subtitles"]) == ["blip", "long12", "silence"]
    assert (job / "subtitles" / "silence.de.vtt").read_text(encoding="utf-8") == "WEBVTT\n"
