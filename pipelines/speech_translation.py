"""Ready-made cascades: speech translation (ASR -> MT) and its single-stage parts.

In a source checkout the models default to the small demo models under
assets/models. An installed package does not ship them: pass models
(`-p asr_model=small -p mt_model=...`), as you would for real work anyway.
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


class ModelRequired(ValueError):
    """A ready-made pipeline was given no model where no demo model is at hand. A usage error."""


def _or_demo(value: str | None, demo: str, param: str, pipeline: str) -> str:
    """The model the user gave, or the demo model when this is a checkout (assets/models exists)."""
    if value:
        return value
    if ASSETS.is_dir():
        return demo
    raise ModelRequired(f"{pipeline} needs a model: pass -p {param}=NAME_OR_PATH (the demo models under "
                        "assets/ come only with a source checkout)")


def speech_translation(target: str = "de", source: str | None = "en", asr_model: str | None = None,
                       mt_model: str | None = None, beam_size: int | None = None, mt_beams: int = 4,
                       asr_nbest: int = 0, mt_ensemble: str = "", combiner: str = "linear",
                       asr_batch: int = 32, device: str = "auto", max_seconds: float = 4 * 3600) -> Pipeline:
    """Speech in, translation out: whisper ASR -> seq2seq MT (or a comma-separated MT ensemble)."""
    asr_model = _or_demo(asr_model, DEMO_ASR, "asr_model", "speech-translation")
    mt_model = None if mt_ensemble else _or_demo(mt_model, DEMO_MT, "mt_model", "speech-translation")
    asr = WhisperASR(model=asr_model, language=source, beam_size=beam_size or (asr_nbest or None),
                     nbest=asr_nbest, decode_batch=asr_batch, device=device, max_seconds=max_seconds,
                     **_demo_asr_chunking(asr_model))
    if mt_ensemble:
        mt = EnsembleTranslate(members=[m.strip() for m in mt_ensemble.split(",") if m.strip()],
                               combiner=combiner, target_lang=target, num_beams=mt_beams,
                               use_upstream_nbest=asr_nbest > 1, device=device)
    else:
        mt = Translate(model=mt_model, source_lang=source, target_lang=target, num_beams=mt_beams,
                       use_upstream_nbest=asr_nbest > 1, empty_source="empty", device=device)  # silence -> ""
    pipe = Pipeline("speech-translation", metrics=[
        Metric("wer", "asr", "text", f"ref_{source or 'en'}"), Metric("bleu", "mt", "text", f"ref_{target}")])
    return pipe.add("asr", asr).add("mt", mt).connect("asr", "mt").validate()


def _demo_asr_chunking(asr_model: str) -> dict:
    """The demo ASR knows only single sentences that start at t=0: cut long audio at every sentence's onset."""
    return {"vad_pad": 0.0, "max_pause": 0.3} if asr_model == DEMO_ASR else {}


def transcribe(model: str | None = None, language: str | None = None, beam_size: int | None = None,
               device: str = "auto", max_seconds: float = 4 * 3600) -> Pipeline:
    """Speech in, transcript out (whisper)."""
    model = _or_demo(model, DEMO_ASR, "model", "transcribe")
    pipe = Pipeline("transcribe", metrics=[Metric("wer", "asr", "text", f"ref_{language or 'en'}")])
    return pipe.add("asr", WhisperASR(model=model, language=language, beam_size=beam_size, device=device,
                                      max_seconds=max_seconds, **_demo_asr_chunking(model)))


def translate(target: str = "de", source: str | None = "en", model: str | None = None, beams: int = 4,
              device: str = "auto") -> Pipeline:
    """Text in, translation out (seq2seq MT)."""
    model = _or_demo(model, DEMO_MT, "model", "translate")
    pipe = Pipeline("translate", metrics=[Metric("bleu", "mt", "text", f"ref_{target}")])
    return pipe.add("mt", Translate(model=model, source_lang=source, target_lang=target, num_beams=beams,
                                    device=device))


def generate(model: str | None = None, max_new_tokens: int = 32, do_sample: bool = False, seed: int = 0,
             device: str = "auto") -> Pipeline:
    """Prompt in, continuation out (causal LM)."""
    model = _or_demo(model, DEMO_LM, "model", "generate")
    return Pipeline("generate").add("generate", Generate(model=model, max_new_tokens=max_new_tokens,
                                                         do_sample=do_sample, seed=seed, device=device))
