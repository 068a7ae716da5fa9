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
from stages.registry import STAGES, Registry, RegistryError

__all__ = ["AudioClip", "Generation", "Hypothesis", "ItemError", "ItemFailure", "Registry", "RegistryError",
           "STAGES", "Stage", "StageConfig", "Text", "Transcript", "TransientError", "Translation"]
