"""The long-form test audio: sentence times that the audio itself confirms, pauses in range, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from demo import make_longform_audio as lf

pytestmark = pytest.mark.skipif(bool(lf.missing_binaries()),
                                reason=f"speech synthesizers not found: {lf.missing_binaries()} "
                                       "(apt-get install -y espeak-ng flite festival)")

SHORT = {"n_files": 3, "seed": 3, "min_minutes": 0.12, "max_minutes": 0.15}  # ~8 s files: a few sentences


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("longform")
    return out, lf.build_longform(out, **SHORT)


def test_sentence_times_match_the_audio(built):
    _, files = built
    for f in files:
        audio, rate = sf.read(f.audio, dtype="float32")
        assert rate == lf.SAMPLE_RATE and abs(len(audio) / rate - f.seconds) < 1e-3
        assert f.seconds >= SHORT["min_minutes"] * 60 and len(f.sentences) >= 2
        assert f.text == " ".join(s.text for s in f.sentences)
        spans = [audio[int(s.start * rate): int(s.end * rate)] for s in f.sentences]
        assert min(np.sqrt(np.mean(x**2)) for x in spans) > 0.02  # every stated span holds speech
        gaps = []
        for before, after in zip(f.sentences, f.sentences[1:]):
            assert lf.PAUSE_SECONDS[0] - 2e-3 <= after.start - before.end <= lf.PAUSE_SECONDS[1] + 2e-3
            margin = int(2e-3 * rate)  # times are rounded to the millisecond
            gaps.append(audio[int(before.end * rate) + margin: int(after.start * rate) - margin])
        gap_power = float(np.mean(np.concatenate(gaps) ** 2))
        if f.noise_snr_db is None:
            assert gap_power == 0.0  # the pauses are true silence
        else:  # the noise in the pauses is at the stated SNR against the speech
            speech_power = float(np.mean(np.concatenate(spans) ** 2)) - gap_power
            assert abs(10 * np.log10(speech_power / gap_power) - f.noise_snr_db) < 1.5


def test_manifest_and_references(built):
    out, files = built
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f.id for f in files]
    for row, f in zip(rows, files):
        assert row["ref_en"] == f.text and (out / row["audio"]).exists()
        if f.kind == "grammar":
            assert row["ref_de"] == " ".join(s.de for s in f.sentences)
        else:
            assert "ref_de" not in row and f.sentences[0].text in lf.PROSE
    assert lf.load_longform(out) == files
    assert any(f.noise_snr_db is not None for f in files) and any(len(f.voices) == 2 for f in files)


def test_same_seed_same_bytes_and_cache_reuse(built, tmp_path, monkeypatch):
    out, files = built
    again = lf.build_longform(tmp_path, **SHORT)
    assert [a.audio.read_bytes() == b.audio.read_bytes() for a, b in zip(again, files)] == [True] * len(files)
    assert [a.sentences for a in again] == [f.sentences for f in files]
    monkeypatch.setattr(lf, "speak_many", lambda *a: pytest.fail("a built folder must be reused"))
    assert lf.build_longform(out, **SHORT) == files


def test_festival_batch_equals_one_by_one():
    voice = lf.Voice("festival", "kal_diphone")
    texts = ['She said "yes" twice.', "The river is wide."]
    together = lf.speak_many(texts, voice)
    assert [len(a) for a in together] == [len(lf.speak(t, voice)) for t in texts]
    assert all(len(a) > 0.5 * lf.SAMPLE_RATE for a in together)


def test_excerpt_keeps_whole_sentences(built):
    _, files = built
    f = files[0]
    cut_at = f.sentences[1].end + 0.05
    audio, short = lf.excerpt(f, cut_at)
    assert short.sentences == f.sentences[:2] and short.text == " ".join(s.text for s in f.sentences[:2])
    assert len(audio) == int((f.sentences[1].end + 0.3) * lf.SAMPLE_RATE) and short.seconds < f.seconds
