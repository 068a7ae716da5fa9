"""A model-free audio stage for the hostile-input tests: decodes each clip and reports its length.

Importable by the CLI as tests.hostile.hostile_toys:clip_seconds.
"""
from __future__ import annotations

from pydantic import Field

from pipelines.graph import Pipeline
from stages.base import ItemFailure, Stage, StageConfig
from stages.payloads import AudioClip, Text
from stages.runtime.audio_decoding import load_audio


class ClipSeconds(Stage):
    """Audio file -> its decoded duration in seconds, as text (no model: the reading path alone)."""

    Input = AudioClip
    Output = Text
    kind = "clip_seconds"

    class Config(StageConfig):
        max_seconds: float = Field(60.0, gt=0)

    def process(self, batch):
        out = []
        for clip in batch:
            try:
                out.append(Text(text=f"{len(load_audio(clip.audio, self.config.max_seconds)) / 16000:.2f}"))
            except ItemFailure as failure:
                out.append(failure)
        return out


def clip_seconds(max_seconds: float = 60.0) -> Pipeline:
    return Pipeline.chain(ClipSeconds(max_seconds=max_seconds), name="clip-seconds")
