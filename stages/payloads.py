"""Payload types shared by stages: what flows along a pipeline's edges.

Every payload is a pydantic model and travels as JSON. Anything large (audio,
tensors) travels as a path or URI, never inline, so the run store stays small
and nothing needs pickle.
"""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class FileRef:
    """Marks a str field as a path to a file whose *content* identifies the item.

    The run store hashes such files into the cache key, so replacing a clip
    with another file of the same name recomputes it.
    """


FilePath = Annotated[str, FileRef()]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hypothesis(Payload):
    """One entry of an n-best list: text and its model score (sum of token log-probs)."""

    text: str
    score: float


class AudioClip(Payload):
    audio: FilePath = Field(description="path or fsspec URI of an audio file")
    language: str | None = Field(None, description="spoken language if known (ISO 639-1)")


class Text(Payload):
    text: str
    language: str | None = None


class TimedWord(Payload):
    word: str = Field(description="as decoded, with its leading space and punctuation")
    start: float
    end: float
    probability: float


class Segment(Payload):
    """One decoded stretch of a file, times in seconds from the file's start."""

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float = Field(description="the decoding temperature whose result was kept (0 = greedy)")
    words: list[TimedWord] | None = Field(None, description="with word_timestamps: each word's time")


class Transcript(Payload):
    text: str = Field(description="the segments' texts joined")
    language: str | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    duration: float | None = Field(None, description="seconds of audio")
    nbest: list[Hypothesis] | None = None
    segments: list[Segment] = Field(default_factory=list)
    note: str | None = Field(None, description="why the text is empty or partial (silence, noise, ...)")


class TranslatedSegment(Payload):
    """One translated stretch of a file: a source segment, or sentences re-cut from segments."""

    start: float
    end: float
    source_text: str
    text: str
    split: bool = Field(False, description="over the MT's token limit: cut into pieces translated alone")


class Translation(Payload):
    text: str = Field(description="the segments' translations joined")
    language: str | None = None
    source_text: str | None = None
    score: float | None = None
    nbest: list[Hypothesis] | None = None
    segments: list[TranslatedSegment] | None = Field(None, description="with timestamped input: per segment")


class Generation(Payload):
    text: str
    prompt: str | None = None
