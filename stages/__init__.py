"""Stages: typed batch processors (ASR, MT, generation, ensembles, ...). No Prefect in here."""
from stages.base import ItemError, ItemFailure, Stage, StageConfig, TransientError
from stages.payloads import AudioClip, Generation, Hypothesis, Text, Transcript, Translation
from stages.registry import STAGES, Registry, RegistryError

__all__ = ["AudioClip", "Generation", "Hypothesis", "ItemError", "ItemFailure", "Registry", "RegistryError",
           "STAGES", "Stage", "StageConfig", "Text", "Transcript", "TransientError", "Translation"]
