"""Stages: typed batch processors (ASR, MT, generation, ensembles, ...). No Prefect in here."""
from stages.base import ItemError, ItemFailure, Stage, StageConfig, TransientError
from stages.payloads import AudioClip, Generation, Hypothesis, Text, Transcript, Translation

# kind -> "module:Class" for `cascade list`; imported lazily (torch, whisper are slow to import).
_BUILTIN = {
    "asr": "stages.asr:WhisperASR",
    "mt": "stages.translate:Translate",
    "generate": "stages.generate:Generate",
    "ensemble_mt": "stages.ensemble:EnsembleTranslate",
    "self_refine": "stages.self_refine:SelfRefine",
    "deliberate": "stages.deliberate:Deliberate",
    "mask_predict": "stages.mask_predict:MaskPredict",
    "masked_diffusion": "stages.masked_diffusion:MaskedDiffusionRepair",
}


def STAGES() -> dict:
    import importlib

    found = {}
    for kind, target in _BUILTIN.items():
        module, _, name = target.partition(":")
        try:
            found[kind] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return found


__all__ = ["AudioClip", "Generation", "Hypothesis", "ItemError", "ItemFailure", "STAGES", "Stage",
           "StageConfig", "Text", "Transcript", "TransientError", "Translation"]
