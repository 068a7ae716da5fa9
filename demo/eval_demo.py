"""Score the demo models on the held-out test clips with plain whisper / transformers calls.

- ASR WER: greedy `whisper.decode` on stacked mels, jiwer WER after the tree's one
  normaliser (stages/training/train_eval.py: lowercase, punctuation removed, whitespace collapsed).
- MT BLEU: sacrebleu of the MT model's translation of the reference English.
- Cascade BLEU: sacrebleu of the MT translation of the ASR transcript.

Prints the three figures and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from stages.training.train_eval import bleu, normalize_transcript, translate, wer

ROOT = Path(__file__).resolve().parents[1]


def load_test_set(test_dir: Path = ROOT / "assets/demo/test") -> list[dict]:
    import soundfile as sf

    rows = [json.loads(line) for line in (test_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines() if line]
    for row in rows:
        audio, rate = sf.read(test_dir / row["audio"], dtype="float32")
        assert rate == 16_000 and audio.ndim == 1, row["id"]
        row["waveform"] = audio
    return rows


def transcribe(model, audios: list[np.ndarray], batch_size: int = 32) -> list[str]:
    """Greedy whisper.decode on stacked mels (the ASR trainer's own dev decoding)."""
    from demo.train_demo_asr import transcribe_batch

    return transcribe_batch(model, audios, batch_size)


def evaluate(asr_path: Path = ROOT / "assets/models/asr-tiny/model.pt", mt_dir: Path = ROOT / "assets/models/mt-en-de",
             test_dir: Path = ROOT / "assets/demo/test") -> dict:
    import whisper
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = load_test_set(test_dir)
    t0 = time.time()
    asr = whisper.load_model(str(asr_path), device=device)
    hyps_en = transcribe(asr, [r["waveform"] for r in rows])
    asr_wer = wer(hyps_en, [r["ref_en"] for r in rows]) / 100
    tokenizer = AutoTokenizer.from_pretrained(mt_dir)
    mt = AutoModelForSeq2SeqLM.from_pretrained(mt_dir, dtype=torch.float32).to(device).eval()
    refs_de = [r["ref_de"] for r in rows]
    mt_bleu = bleu(translate(mt, tokenizer, [r["ref_en"] for r in rows]), refs_de)
    cascade_bleu = bleu(translate(mt, tokenizer, hyps_en), refs_de)
    return {"clips": len(rows), "asr_wer": asr_wer, "mt_bleu": mt_bleu, "cascade_bleu": cascade_bleu,
            "seconds": time.time() - t0, "errors": [
                {"id": r["id"], "ref": r["ref_en"], "hyp": h} for r, h in zip(rows, hyps_en)
                if normalize_transcript(r["ref_en"]) != normalize_transcript(h)]}


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
