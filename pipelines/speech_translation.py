"""Ready-made cascades: speech translation (ASR -> MT) and its single-stage parts.

Defaults point at the small demo models the repo trains and ships under
assets/models; pass real checkpoints (`-p asr_model=small -p mt_model=...`)
for real work.
"""
from __future__ import annotations

from pathlib import Path

from pipelines.graph import Metric, Pipeline
from stages.asr import WhisperASR
from stages.ensemble import EnsembleTranslate
from stages.generate import Generate
from stages.translate import Translate

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "models"
DEMO_ASR = str(ASSETS / "asr-tiny" / "model.pt")
DEMO_MT = str(ASSETS / "mt-en-de")
DEMO_LM = str(ASSETS / "lm-en")


def speech_translation(target: str = "de", source: str | None = "en", asr_model: str = DEMO_ASR,
                       mt_model: str = DEMO_MT, beam_size: int | None = None, mt_beams: int = 4,
                       asr_nbest: int = 0, mt_ensemble: str = "", combiner: str = "linear",
                       asr_batch: int = 32, device: str = "auto", max_seconds: float = 4 * 3600) -> Pipeline:
    """Speech in, translation out: whisper ASR -> seq2seq MT (or a comma-separated MT ensemble)."""
    asr = WhisperASR(model=asr_model, language=source, beam_size=beam_size or (asr_nbest or None),
                     nbest=asr_nbest, decode_batch=asr_batch, device=device, max_seconds=max_seconds)
    if mt_ensemble:
        mt = EnsembleTranslate(members=[m.strip() for m in mt_ensemble.split(",") if m.strip()],
                               combiner=combiner, target_lang=target, num_beams=mt_beams, device=device)
    else:
        mt = Translate(model=mt_model, source_lang=source, target_lang=target, num_beams=mt_beams,
                       use_upstream_nbest=asr_nbest > 1, empty_source="empty", device=device)  # silence -> ""
    pipe = Pipeline("speech-translation", metrics=[
        Metric("wer", "asr", "text", f"ref_{source or 'en'}"), Metric("bleu", "mt", "text", f"ref_{target}")])
    return pipe.add("asr", asr).add("mt", mt).connect("asr", "mt").validate()


def transcribe(model: str = DEMO_ASR, language: str | None = None, beam_size: int | None = None,
               device: str = "auto", max_seconds: float = 4 * 3600) -> Pipeline:
    """Speech in, transcript out (whisper)."""
    pipe = Pipeline("transcribe", metrics=[Metric("wer", "asr", "text", f"ref_{language or 'en'}")])
    return pipe.add("asr", WhisperASR(model=model, language=language, beam_size=beam_size, device=device,
                                      max_seconds=max_seconds))


def translate(target: str = "de", source: str | None = "en", model: str = DEMO_MT, beams: int = 4,
              device: str = "auto") -> Pipeline:
    """Text in, translation out (seq2seq MT)."""
    pipe = Pipeline("translate", metrics=[Metric("bleu", "mt", "text", f"ref_{target}")])
    return pipe.add("mt", Translate(model=model, source_lang=source, target_lang=target, num_beams=beams,
                                    device=device))


def generate(model: str = DEMO_LM, max_new_tokens: int = 32, do_sample: bool = False, seed: int = 0,
             device: str = "auto") -> Pipeline:
    """Prompt in, continuation out (causal LM)."""
    return Pipeline("generate").add("generate", Generate(model=model, max_new_tokens=max_new_tokens,
                                                         do_sample=do_sample, seed=seed, device=device))
