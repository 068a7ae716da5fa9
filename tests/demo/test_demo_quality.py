"""The committed demo models reach their quality targets on the held-out test clips.

Plain whisper / transformers / jiwer / sacrebleu calls only, so this checks the
assets exactly as runtime code will use them:
ASR WER <= 5 %, MT BLEU >= 70, cascade (ASR -> MT) BLEU >= 60.
"""

import json
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
ASR = ROOT / "assets/models/asr-tiny/model.pt"
MT = ROOT / "assets/models/mt-en-de"
TEST = ROOT / "assets/demo/test"


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())


@pytest.fixture(scope="module")
def clips():
    import soundfile as sf

    rows = [json.loads(line) for line in (TEST / "manifest.jsonl").read_text(encoding="utf-8").splitlines() if line]
    for row in rows:
        row["waveform"], rate = sf.read(TEST / row["audio"], dtype="float32")
        assert rate == 16_000
    return rows


@pytest.fixture(scope="module")
def transcripts(clips):
    import whisper

    torch.set_num_threads(2)
    model = whisper.load_model(str(ASR), device="cpu")
    frames = 2 * model.dims.n_audio_ctx
    mel = torch.stack([whisper.pad_or_trim(whisper.log_mel_spectrogram(torch.from_numpy(c["waveform"]),
                                                                       model.dims.n_mels), frames) for c in clips])
    options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False)
    with torch.no_grad():
        return [r.text for r in whisper.decode(model, mel, options)]


@pytest.fixture(scope="module")
def translator():
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MT)
    model = AutoModelForSeq2SeqLM.from_pretrained(MT, dtype=torch.float32).eval()

    def translate(sentences: list[str]) -> list[str]:
        with torch.no_grad():
            batch = tokenizer(sentences, return_tensors="pt", padding=True)
            return tokenizer.batch_decode(model.generate(**batch), skip_special_tokens=True)

    return translate


def test_test_set_is_big_enough_and_small_on_disk(clips):
    assert len(clips) >= 60
    assert sum(p.stat().st_size for p in TEST.iterdir()) < 8 * 2**20


def test_demo_weights_fit_the_budget():
    files = [ASR, *MT.glob("*.safetensors"), *(ROOT / "assets/models/lm-en").glob("*.safetensors")]
    assert sum(f.stat().st_size for f in files) <= 40 * 2**20


def test_asr_word_error_rate(clips, transcripts):
    import jiwer

    wer = jiwer.wer([normalise(c["ref_en"]) for c in clips], [normalise(t) for t in transcripts])
    assert wer <= 0.05, wer


def test_mt_bleu(clips, translator):
    import sacrebleu

    hyps = translator([c["ref_en"] for c in clips])
    assert sacrebleu.corpus_bleu(hyps, [[c["ref_de"] for c in clips]]).score >= 70


def test_cascade_bleu(clips, transcripts, translator):
    import sacrebleu

    hyps = translator(transcripts)
    assert sacrebleu.corpus_bleu(hyps, [[c["ref_de"] for c in clips]]).score >= 60
