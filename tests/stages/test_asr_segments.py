"""ASR segments on the committed demo model: short clips as before, long files cut at pauses and joined
exactly, temperature fallback inside the stage, silence and noise empty with a reason, bad audio an error."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import whisper

import stages.methods.whisper_batch as whisper_batch
from stages.asr import WhisperASR, window_mel
from stages.base import ItemError
from stages.payloads import AudioClip, Transcript

ROOT = Path(__file__).resolve().parents[2]
ASR = ROOT / "assets/models/asr-tiny/model.pt"
TEST = ROOT / "assets/demo/test"
RATE = 16_000
# The demo model was trained on clips that start at t=0 and hold one sentence: give it exactly that.
PER_SENTENCE = dict(vad_pad=0.0, max_pause=0.3)


@pytest.fixture(scope="module")
def demo():
    rows = [json.loads(line) for line in (TEST / "manifest.jsonl").read_text().splitlines() if line][:12]
    waves = [sf.read(TEST / r["audio"], dtype="float32")[0] for r in rows]
    model = whisper.load_model(str(ASR), device="cpu")
    options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False)
    frames = 2 * model.dims.n_audio_ctx
    with torch.no_grad():  # whisper's own decode, clip by clip in one batch: the reference
        texts = [r.text for r in whisper.decode(model, torch.stack([window_mel(w, 80, frames) for w in waves]), options)]
    return rows, waves, texts


@pytest.fixture(scope="module")
def long_file(demo, tmp_path_factory):
    """The 12 clips joined with 0.6 s pauses (35 s, six demo windows): audio path and each clip's start."""
    _, waves, _ = demo
    pause = np.zeros(int(0.6 * RATE), np.float32)
    starts, parts, t = [], [pause], len(pause)
    for w in waves:
        starts.append(t / RATE)
        parts += [w, pause]
        t += len(w) + len(pause)
    path = tmp_path_factory.mktemp("long") / "long12.wav"
    sf.write(path, np.concatenate(parts), RATE)
    return path, starts


def _asr(**kw) -> WhisperASR:
    return WhisperASR(model=str(ASR), **kw)


def test_short_clips_give_the_same_text_as_before(demo):
    rows, _, texts = demo
    got = _asr().process([AudioClip(audio=str(TEST / r["audio"])) for r in rows])
    assert [g.text for g in got] == texts
    for g in got:
        [seg] = g.segments
        assert seg.text == g.text and seg.temperature == 0.0 and 0 <= seg.start < seg.end <= g.duration


def test_long_file_is_cut_at_every_pause_and_joined_exactly_in_order(demo, long_file):
    _, waves, texts = demo
    path, starts = long_file
    [got] = _asr(**PER_SENTENCE).process([AudioClip(audio=str(path))])
    assert got.text == " ".join(texts)  # no word lost or doubled at any of the 11 chunk boundaries
    assert [s.text for s in got.segments] == texts
    for seg, start, w in zip(got.segments, starts, waves):
        assert start - 0.01 <= seg.start <= start + 0.1  # in the file's time (a clip may open softly)
        assert start < seg.end <= start + len(w) / RATE + 0.01
    assert got.duration == pytest.approx(sum(map(len, waves)) / RATE + 0.6 * 13, abs=0.01)


def test_default_packing_fills_windows_and_cuts_only_in_pauses(demo, long_file):
    _, waves, _ = demo
    path, starts = long_file
    [got] = _asr().process([AudioClip(audio=str(path))])
    clips = [(s, s + len(w) / RATE) for s, w in zip(starts, waves)]
    assert len(got.segments) < len(clips)  # several sentences per window
    for seg in got.segments:
        assert seg.end - seg.start <= 6.0  # the demo model's window
        inside = [c for c in clips if seg.start - 0.15 <= c[0] and c[1] <= seg.end + 0.15]
        assert inside and all(not (c[0] < seg.start - 0.15 < c[1]) for c in clips)  # no clip cut in two


def test_batched_equals_per_file(demo, long_file, tmp_path):
    rows, _, _ = demo
    noise = tmp_path / "noise.wav"
    sf.write(noise, (0.1 * np.random.default_rng(0).standard_normal(3 * RATE)).astype(np.float32), RATE)
    clips = [AudioClip(audio=str(long_file[0])), AudioClip(audio=str(TEST / rows[3]["audio"])),
             AudioClip(audio=str(noise)), AudioClip(audio=str(TEST / rows[7]["audio"]))]
    stage = _asr(**PER_SENTENCE, decode_batch=5)
    together = stage.process(clips)
    alone = [stage.process([c])[0] for c in clips]
    assert [t.text for t in together] == [a.text for a in alone]
    assert [t.note for t in together] == [a.note for a in alone]
    for t, a in zip(together, alone):  # the same cuts; scores equal up to float noise of the batch size
        assert [(s.start, s.end, s.text, s.temperature) for s in t.segments] == \
            [(s.start, s.end, s.text, s.temperature) for s in a.segments]
        assert [s.avg_logprob for s in t.segments] == pytest.approx([s.avg_logprob for s in a.segments], abs=1e-4)
    assert len(together[0].segments) == 12 and together[2].text == "" and together[1].text


@pytest.fixture
def bad_audio(tmp_path, demo):
    _, waves, _ = demo
    rng = np.random.default_rng(1)
    files = {
        "silence20s.wav": np.zeros(20 * RATE, np.float32),
        "white_noise.wav": (0.2 * rng.standard_normal(8 * RATE)).astype(np.float32),
        "short50ms.wav": waves[0][: int(0.05 * RATE)],
        "huge.wav": np.full(RATE, 1e30, np.float32),
    }
    for name, samples in files.items():
        sf.write(tmp_path / name, samples, RATE, subtype="FLOAT")
    return tmp_path


def test_silence_noise_and_a_50_ms_clip_are_empty_with_a_reason_and_1e30_is_an_error(bad_audio):
    names = ["silence20s.wav", "white_noise.wav", "short50ms.wav", "huge.wav"]
    got = _asr().run_batch([AudioClip(audio=str(bad_audio / n)) for n in names])
    silence, noise, short, huge = got
    for t, needle in [(silence, "digital silence"), (noise, "only noise"), (short, "shorter than a word")]:
        assert isinstance(t, Transcript) and t.text == "" and t.segments == [] and needle in t.note
    assert isinstance(huge, ItemError) and huge.kind == "bad_input" and "out of range" in huge.message


def test_non_finite_scores_fail_the_item(demo, monkeypatch):
    rows, _, _ = demo
    real = whisper_batch.BatchedDecodingTask.run_windows

    def nan_scores(self, mel, seeds=None):
        out = real(self, mel, seeds)
        out[0].avg_logprob = float("nan")
        return out

    monkeypatch.setattr(whisper_batch.BatchedDecodingTask, "run_windows", nan_scores)
    first, second = _asr().run_batch([AudioClip(audio=str(TEST / r["audio"])) for r in rows[:2]])
    assert isinstance(first, ItemError) and "non-finite scores" in first.message
    assert isinstance(second, Transcript) and second.text


def test_a_looping_chunk_is_decoded_again_at_0_2_inside_the_stage(demo, long_file, monkeypatch):
    _, _, texts = demo
    calls, flagged = [], []
    real_run, real_ratio = whisper_batch.BatchedDecodingTask.run_windows, whisper_batch.compression_ratio

    def spy(self, mel, seeds=None):
        calls.append((mel.shape[0], self.options.temperature))
        return real_run(self, mel, seeds)

    def ratio(text):  # the fourth sentence "loops" the first time it is decoded
        if text == texts[3] and not flagged:
            flagged.append(text)
            return 3.0
        return real_ratio(text)

    monkeypatch.setattr(whisper_batch.BatchedDecodingTask, "run_windows", spy)
    monkeypatch.setattr(whisper_batch, "compression_ratio", ratio)
    [got] = _asr(**PER_SENTENCE, decode_batch=16).process([AudioClip(audio=str(long_file[0]))])
    assert calls == [(12, 0.0), (1, 0.2)]  # one batched greedy pass, then only the failed chunk
    assert [s.temperature for s in got.segments] == [0.0] * 3 + [0.2] + [0.0] * 8
    assert got.segments[3].text == texts[3]  # the confident demo model samples the same sentence


def test_word_timestamps_cover_each_segment_in_order(long_file, monkeypatch):
    import whisper.timing as timing

    # whisper's DTW is numba-compiled on first use (tens of seconds); its plain-Python body is the same code
    monkeypatch.setattr(timing, "dtw_cpu", timing.dtw_cpu.py_func)
    monkeypatch.setattr(timing, "backtrace", timing.backtrace.py_func)
    [got] = _asr(**PER_SENTENCE, word_timestamps=True).process([AudioClip(audio=str(long_file[0]))])
    spread = 0
    for seg in got.segments:
        assert "".join(w.word for w in seg.words).strip() == seg.text
        times = [t for w in seg.words for t in (w.start, w.end)]
        assert times == sorted(times) and seg.start <= times[0] and times[-1] <= seg.end + 1e-6
        spread += times[-1] - times[0] > 0.3 * (seg.end - seg.start)
    assert spread >= len(got.segments) // 2  # words are spread over the speech, not piled at one instant
    [plain] = _asr(**PER_SENTENCE).process([AudioClip(audio=str(long_file[0]))])
    assert plain.text == got.text and all(s.words is None for s in plain.segments)
