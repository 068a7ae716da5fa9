"""Score the demo models on the held-out test clips with plain whisper / transformers calls.

- ASR WER: greedy `whisper.decode` on stacked mels, jiwer WER after `normalise`
  (lowercase, punctuation removed, whitespace collapsed) on both sides.
- MT BLEU: sacrebleu of the MT model's translation of the reference English.
- Cascade BLEU: sacrebleu of the MT translation of the ASR transcript.

Prints the three figures and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def normalise(text: str) -> str:
    """Lowercase, drop punctuation (apostrophes included), collapse whitespace."""
    return " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())


def load_test_set(test_dir: Path = ROOT / "assets/demo/test") -> list[dict]:
    import soundfile as sf

    rows = [json.loads(line) for line in (test_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines() if line]
    for row in rows:
        audio, rate = sf.read(test_dir / row["audio"], dtype="float32")
        assert rate == 16_000 and audio.ndim == 1, row["id"]
        row["waveform"] = audio
    return rows


@torch.no_grad()
def transcribe(model, audios: list[np.ndarray], batch_size: int = 32) -> list[str]:
    import whisper

    window = 2 * model.dims.n_audio_ctx
    options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False)
    texts = []
    for b in range(0, len(audios), batch_size):
        mels = [whisper.pad_or_trim(whisper.log_mel_spectrogram(torch.from_numpy(a), model.dims.n_mels), window)
                for a in audios[b:b + batch_size]]
        texts += [r.text for r in whisper.decode(model, torch.stack(mels).to(model.device), options)]
    return texts


@torch.no_grad()
def translate(model, tokenizer, sources: list[str], batch_size: int = 64) -> list[str]:
    out = []
    for b in range(0, len(sources), batch_size):
        enc = tokenizer(sources[b:b + batch_size], return_tensors="pt", padding=True).to(model.device)
        out += tokenizer.batch_decode(model.generate(**enc), skip_special_tokens=True)
    return out


def evaluate(asr_path: Path = ROOT / "assets/models/asr-tiny/model.pt", mt_dir: Path = ROOT / "assets/models/mt-en-de",
             test_dir: Path = ROOT / "assets/demo/test") -> dict:
    import jiwer
    import sacrebleu
    import whisper
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = load_test_set(test_dir)
    t0 = time.time()
    asr = whisper.load_model(str(asr_path), device=device)
    hyps_en = transcribe(asr, [r["waveform"] for r in rows])
    wer = jiwer.wer([normalise(r["ref_en"]) for r in rows], [normalise(h) for h in hyps_en])
    tokenizer = AutoTokenizer.from_pretrained(mt_dir)
    mt = AutoModelForSeq2SeqLM.from_pretrained(mt_dir, dtype=torch.float32).to(device).eval()
    refs_de = [r["ref_de"] for r in rows]
    mt_bleu = sacrebleu.corpus_bleu(translate(mt, tokenizer, [r["ref_en"] for r in rows]), [refs_de]).score
    cascade = translate(mt, tokenizer, hyps_en)
    cascade_bleu = sacrebleu.corpus_bleu(cascade, [refs_de]).score
    return {"clips": len(rows), "asr_wer": wer, "mt_bleu": mt_bleu, "cascade_bleu": cascade_bleu,
            "seconds": time.time() - t0, "errors": [
                {"id": r["id"], "ref": r["ref_en"], "hyp": h} for r, h in zip(rows, hyps_en)
                if normalise(r["ref_en"]) != normalise(h)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--asr", default=str(ROOT / "assets/models/asr-tiny/model.pt"))
    parser.add_argument("--mt", default=str(ROOT / "assets/models/mt-en-de"))
    parser.add_argument("--show-errors", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    result = evaluate(Path(args.asr), Path(args.mt))
    errors = result.pop("errors")
    if args.show_errors:
        for e in errors:
            print(f"{e['id']}: REF {e['ref']!r}\n{'':15} HYP {e['hyp']!r}")
    print(f"ASR WER (normalised) on {result['clips']} clips: {100 * result['asr_wer']:.2f} %")
    print(f"MT BLEU (reference English in): {result['mt_bleu']:.2f}")
    print(f"Cascade BLEU (ASR -> MT): {result['cascade_bleu']:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
