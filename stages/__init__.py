"""Stages: typed batch processors (ASR, MT, generation, ensembles, ...). No Prefect in here."""
import os

# torch's OpenMP threads spin while they wait, by default: they keep both cores busy and take them from
# the Prefect threads and server that run beside the stages. Waiting threads that sleep cost the stages
# nothing measurable here and leave the gaps to the orchestration (benchmarks/bench_overhead.py, batches
# of 64: flow/loop 1.11-1.15 with libgomp's default spinning, 0.99-1.06 sleeping). Exported values win;
# it only takes effect when torch is imported after this package (cascadekit's entry points do that).
THREAD_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
for _key, _value in THREAD_ENV_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

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
